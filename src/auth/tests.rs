//! Socket tests of the providers against loopback fake token endpoints.
