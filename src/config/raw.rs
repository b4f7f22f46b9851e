//! Raw serde structs mirroring `config.example.toml`. STUB: the config helper fills this.
