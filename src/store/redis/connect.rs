//! How the store reaches Redis: the client for `[store] url` and, for `rediss://`, the trust
//! roots: the system's plus those of `ca_file`. redis-rs takes one PEM bundle that replaces the
//! system's roots, so the bundle holds both.

use std::path::Path;

use base64::Engine as _;
use redis::{Client, ConnectionInfo, IntoConnectionInfo, ProtocolVersion, TlsCertificates};

use super::errors::RedisSetupError;
use crate::config::RedisConfig;

/// The URL as redis-rs reads it, speaking RESP3 (push messages on the command connection).
pub(super) fn connection_info(config: &RedisConfig) -> Result<ConnectionInfo, RedisSetupError> {
    let info = config
        .url
        .expose()
        .as_str()
        .into_connection_info()
        .map_err(|_| RedisSetupError("not a valid redis:// or rediss:// URL"))?;
    let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
    Ok(info.set_redis_settings(settings))
}

/// A client for one server at `info`, trusting `ca_file` as well when the URL is `rediss://`.
pub(super) fn client(info: ConnectionInfo, ca_file: Option<&Path>) -> Result<Client, RedisSetupError> {
    match ca_file {
        None => Client::open(info).map_err(|_| RedisSetupError("not a valid redis:// or rediss:// URL")),
        Some(path) => Client::build_with_tls(info, certificates(path)?)
            .map_err(|_| RedisSetupError("ca_file is only used with a rediss:// URL")),
    }
}

/// The system's trust roots and `ca_file`'s certificates, as one PEM bundle.
pub(super) fn certificates(ca_file: &Path) -> Result<TlsCertificates, RedisSetupError> {
    let mut bundle = std::fs::read(ca_file).map_err(|_| RedisSetupError("the ca_file cannot be read"))?;
    if !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    let system = rustls_native_certs::load_native_certs();
    for cert in &system.certs {
        bundle.extend_from_slice(pem(cert.as_ref()).as_bytes());
    }
    Ok(TlsCertificates {
        client_tls: None,
        root_cert: Some(bundle),
    })
}

/// One DER certificate in PEM armour.
fn pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).unwrap_or_default());
        text.push('\n');
    }
    text.push_str("-----END CERTIFICATE-----\n");
    text
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn a_der_certificate_reads_back_from_its_pem() {
        let ca = include_bytes!("../../auth/http/testdata/ca.pem");
        let der = CertificateDer::from_pem_slice(ca).expect("the test CA parses");
        let back = CertificateDer::from_pem_slice(pem(der.as_ref()).as_bytes()).expect("PEM parses");
        assert_eq!(back, der);
    }

    #[test]
    fn the_bundle_holds_the_ca_file_and_the_system_roots() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/auth/http/testdata/ca.pem");
        let bundle = certificates(&path).expect("bundle").root_cert.expect("roots");
        let count = CertificateDer::pem_slice_iter(&bundle).filter(Result::is_ok).count();
        let system = rustls_native_certs::load_native_certs().certs.len();
        assert_eq!(count, system + 1);
    }
}
