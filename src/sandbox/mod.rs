//! Sandbox providers. STUB: the sandbox helper implements this.
