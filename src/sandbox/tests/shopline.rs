//! SHOPLINE signed token endpoints, grace period and leaky bucket.
