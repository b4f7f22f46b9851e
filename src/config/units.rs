//! Durations ("90s") and sizes ("2MiB"). STUB: the config helper fills this.
