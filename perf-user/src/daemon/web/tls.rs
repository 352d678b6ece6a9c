//! `tls_server_config` → a rustls server configuration: certificate and
//! key, versions, cipher suites and groups by Go's names, and the
//! exporter-toolkit's five client-certificate policies.

use std::{path::Path, sync::Arc};

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    SupportedProtocolVersion,
    client::danger::HandshakeSignatureValid,
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};

use super::schema::{ClientAuth, Pem, TlsSettings, TlsVersion};

/// Builds the server configuration, reading the certificate, key and client
/// CA. Every error names the key and file concerned.
pub fn server_config(t: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(provider(t)?);
    let certs = read_certs(&t.cert, "cert_file")?;
    let key = read_key(&t.key)?;
    let versions: Vec<&'static SupportedProtocolVersion> = [
        (TlsVersion::Tls12, &rustls::version::TLS12),
        (TlsVersion::Tls13, &rustls::version::TLS13),
    ]
    .into_iter()
    .filter(|(v, _)| (t.min_version..=t.max_version).contains(v))
    .map(|(_, p)| p)
    .collect();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match client_verifier(t, &provider)? {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "tls_server_config: the key does not fit the certificate ({}): {e}",
            describe(&t.cert)
        )
    })?;
    config.ignore_client_order = t.prefer_server_cipher_suites;
    // HTTP/1.1 only: what Prometheus scrapes with.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// ring's provider with `cipher_suites` and `curve_preferences` applied.
/// As in Go, `cipher_suites` chooses among TLS 1.2 suites; TLS 1.3's are
/// always on.
fn provider(t: &TlsSettings) -> Result<CryptoProvider, String> {
    let mut p = ring::default_provider();
    if !t.cipher_suites.is_empty() {
        let mut chosen: Vec<_> = p
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_some())
            .copied()
            .collect();
        for name in &t.cipher_suites {
            let found = p.cipher_suites.iter().find(|s| {
                let ours = format!("{:?}", s.suite());
                // Go also knows the ChaCha20 suites without "_SHA256".
                ours == *name || ours.strip_suffix("_SHA256") == Some(name)
            });
            match found {
                Some(s) if s.tls13().is_none() => chosen.push(*s),
                Some(_) => {}
                None => {
                    let known: Vec<String> = p
                        .cipher_suites
                        .iter()
                        .filter(|s| s.tls13().is_none())
                        .map(|s| format!("{:?}", s.suite()))
                        .collect();
                    return Err(format!(
                        "tls_server_config.cipher_suites: {name:?} is not a suite perf-user \
                         serves; the TLS 1.2 suites it serves: {}",
                        known.join(", ")
                    ));
                }
            }
        }
        p.cipher_suites = chosen;
    }
    if !t.curve_preferences.is_empty() {
        let mut chosen = Vec::new();
        for name in &t.curve_preferences {
            let ours = match name.as_str() {
                "X25519" => "X25519",
                "CurveP256" => "secp256r1",
                "CurveP384" => "secp384r1",
                _ => {
                    return Err(format!(
                        "tls_server_config.curve_preferences: {name:?} is not a curve perf-user \
                         serves; the ones it serves: X25519, CurveP256, CurveP384"
                    ));
                }
            };
            chosen.extend(
                p.kx_groups
                    .iter()
                    .find(|g| format!("{:?}", g.name()) == ours)
                    .copied(),
            );
        }
        p.kx_groups = chosen;
    }
    Ok(p)
}

fn client_verifier(
    t: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, String> {
    let any = |mandatory| {
        Some(Arc::new(AnyClientCert {
            mandatory,
            provider: Arc::clone(provider),
        }) as Arc<dyn ClientCertVerifier>)
    };
    match t.client_auth {
        ClientAuth::None => return Ok(None),
        ClientAuth::Request => return Ok(any(false)),
        ClientAuth::RequireAny => return Ok(any(true)),
        ClientAuth::VerifyIfGiven | ClientAuth::RequireAndVerify => {}
    }
    let ca = t
        .client_ca
        .as_ref()
        .ok_or("tls_server_config: client_ca_file is needed to verify client certificates")?;
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca, "client_ca_file")? {
        roots.add(cert).map_err(|e| {
            format!(
                "tls_server_config.client_ca_file: a certificate in {} is not a CA: {e}",
                describe(ca)
            )
        })?;
    }
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(roots.into(), Arc::clone(provider));
    if t.client_auth == ClientAuth::VerifyIfGiven {
        builder = builder.allow_unauthenticated();
    }
    let verifier = builder
        .build()
        .map_err(|e| format!("tls_server_config.client_ca_file ({}): {e}", describe(ca)))?;
    if t.client_allowed_sans.is_empty() {
        return Ok(Some(verifier));
    }
    Ok(Some(Arc::new(AllowedSans {
        inner: verifier,
        allowed: t.client_allowed_sans.clone(),
    })))
}

/// `RequestClientCert` and `RequireAnyClientCert`: any certificate is taken
/// (the client still proves it holds its key).
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `client_allowed_sans`: a verified certificate must also name one of
/// these DNS names or IP addresses.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        let named = self.allowed.iter().any(|san| {
            ServerName::try_from(san.as_str())
                .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        });
        if named {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The file's path, or "inline".
fn describe(pem: &Pem) -> String {
    match pem {
        Pem::File(p) => p.display().to_string(),
        Pem::Inline(_) => "inline".to_string(),
    }
}

fn pem_bytes(pem: &Pem, key: &str) -> Result<Vec<u8>, String> {
    match pem {
        Pem::File(p) => {
            read_small(p).map_err(|e| format!("tls_server_config.{key} {}: {e}", p.display()))
        }
        Pem::Inline(text) => Ok(text.as_bytes().to_vec()),
    }
}

/// Certificate files are a few KiB; a bound keeps a wrong path out of memory.
fn read_small(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    const MAX: u64 = 1 << 20;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX {
        return Err("larger than 1 MiB: not a PEM file".into());
    }
    Ok(bytes)
}

fn read_certs(pem: &Pem, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = pem_bytes(pem, key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_server_config.{key} ({}): not PEM: {e}", describe(pem)))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_server_config.{key} ({}): no CERTIFICATE block in it",
            describe(pem)
        ));
    }
    Ok(certs)
}

fn read_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = pem_bytes(pem, "key_file")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        format!(
            "tls_server_config.key_file ({}): no private key in it: {e}",
            describe(pem)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TlsSettings {
        TlsSettings {
            cert: Pem::Inline(String::new()),
            key: Pem::Inline(String::new()),
            client_ca: None,
            client_auth: ClientAuth::None,
            client_allowed_sans: Vec::new(),
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            cipher_suites: Vec::new(),
            prefer_server_cipher_suites: true,
            curve_preferences: Vec::new(),
        }
    }

    #[test]
    fn cipher_suites_choose_among_tls12_suites_by_gos_names() {
        let mut t = settings();
        t.cipher_suites = vec![
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305".into(),
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into(),
        ];
        let p = provider(&t).unwrap();
        let names: Vec<String> = p
            .cipher_suites
            .iter()
            .filter(|s| s.tls13().is_none())
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            names,
            [
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        // TLS 1.3's suites stay, as in Go.
        assert!(p.cipher_suites.iter().any(|s| s.tls13().is_some()));
        t.cipher_suites = vec!["TLS_RSA_WITH_AES_128_CBC_SHA".into()];
        let e = provider(&t).unwrap_err();
        assert!(e.contains("TLS_RSA_WITH_AES_128_CBC_SHA"), "{e}");
    }

    #[test]
    fn curves_map_to_rustls_groups_in_order() {
        let mut t = settings();
        t.curve_preferences = vec!["CurveP384".into(), "X25519".into()];
        let p = provider(&t).unwrap();
        let names: Vec<String> = p
            .kx_groups
            .iter()
            .map(|g| format!("{:?}", g.name()))
            .collect();
        assert_eq!(names, ["secp384r1", "X25519"]);
        t.curve_preferences = vec!["CurveP521".into()];
        assert!(provider(&t).unwrap_err().contains("CurveP521"));
    }

    #[test]
    fn a_missing_file_names_the_key_and_path() {
        let mut t = settings();
        t.cert = Pem::File("/nonexistent/server.crt".into());
        let e = server_config(&t).unwrap_err();
        assert!(
            e.contains("cert_file") && e.contains("/nonexistent/server.crt"),
            "{e}"
        );
    }
}
