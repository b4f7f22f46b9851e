//! Vantage.
