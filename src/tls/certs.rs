//! Making a CA and node certificates (rcgen): what `peercache certs` writes for a demo
//! cluster, and what the tests and the simulator use. Keys are ECDSA P-256.
//!
//! A node certificate names the node's member id (a DNS name or an IP address, see
//! [`server_name`](super::server_name)) and serves both as the node's server
//! certificate and as its client certificate towards peers.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{Error, Result};

/// Days a certificate made here is valid for, unless told otherwise.
pub const DEFAULT_DAYS: u32 = 3650;

fn failed(what: &str) -> impl Fn(rcgen::Error) -> Error + '_ {
    move |e| Error::Config(format!("{what}: {e}"))
}

/// A certificate authority that signs node certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert: String,
}

/// A node's certificate and private key, PEM.
#[derive(Debug, Clone)]
pub struct NodeCert {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

impl Ca {
    /// A new CA, its certificate self-signed, named `name`, valid for [`DEFAULT_DAYS`].
    pub fn new(name: &str) -> Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(&mut params, 0, DEFAULT_DAYS);
        let key = KeyPair::generate().map_err(failed("generating the CA key"))?;
        let cert = params
            .self_signed(&key)
            .map_err(failed("signing the CA"))?
            .pem();
        let issuer = Issuer::new(params, key);
        Ok(Ca { issuer, cert })
    }

    /// An existing CA from its certificate and key, PEM.
    pub fn from_pem(cert: &str, key: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key).map_err(failed("the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(cert, key).map_err(failed("the CA certificate"))?;
        Ok(Ca {
            issuer,
            cert: cert.to_owned(),
        })
    }

    /// The CA's certificate, PEM: what every node trusts.
    pub fn cert_pem(&self) -> String {
        self.cert.clone()
    }

    /// The CA's private key, PEM: keep it off the nodes.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A node certificate for `names` (DNS names or IP addresses; the first is also its
    /// common name), valid from now for [`DEFAULT_DAYS`].
    pub fn issue(&self, names: &[&str]) -> Result<NodeCert> {
        self.issue_for_days(names, 0, DEFAULT_DAYS)
    }

    /// A node certificate for `names` valid from `from_days` (negative: in the past)
    /// for `days` days; the tests make expired ones with it.
    pub fn issue_for_days(&self, names: &[&str], from_days: i64, days: u32) -> Result<NodeCert> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).map_err(failed("the names"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(first) = names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, from_days, days);
        let key = KeyPair::generate().map_err(failed("generating a node key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(failed("signing a node certificate"))?;
        Ok(NodeCert {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

/// Valid from `from_days` days from now (a day early, for clocks that lag) for `days`.
fn validity(params: &mut CertificateParams, from_days: i64, days: u32) {
    let day = rcgen::date_time_ymd(1970, 1, 2) - rcgen::date_time_ymd(1970, 1, 1);
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
    let start = now + day * (from_days as i32) - day;
    params.not_before = start;
    params.not_after = start + day * (days as i32 + 1);
}
