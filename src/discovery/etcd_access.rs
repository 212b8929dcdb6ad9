//! How an [`EtcdCoordinator`](super::EtcdCoordinator) proves itself to etcd and trusts
//! it: TLS for `https` endpoints ([`EtcdTls`]: the CA that signs etcd's certificate and,
//! for etcd's `--client-cert-auth`, a client certificate) and a user with a password
//! ([`EtcdUser`]: etcd's `auth enable`). Material arrives as PEM bytes, so callers
//! choose where it is kept.

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use tonic::Code;

use crate::error::{Error, Result};

/// TLS to etcd: whom to trust, and the certificate to show when etcd asks for one.
#[derive(Clone)]
pub struct EtcdTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl EtcdTls {
    /// Trusts the CA certificates in `ca_pem` (PEM) to sign etcd's server certificate.
    /// Only these: a public CA would vouch for any host it has certified.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Self {
        EtcdTls {
            ca_pem: ca_pem.into(),
            identity: None,
        }
    }

    /// Shows the client certificate `cert_pem`, with its private key `key_pem` (both
    /// PEM), to an etcd run with `--client-cert-auth`.
    pub fn with_identity(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    fn options(&self) -> TlsOptions {
        let tls = TlsOptions::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        match &self.identity {
            Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
            None => tls,
        }
    }
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

/// An etcd user and its password, for an etcd with authentication enabled.
#[derive(Clone)]
pub struct EtcdUser {
    name: String,
    password: String,
}

impl EtcdUser {
    /// User `name` with `password`.
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        EtcdUser {
            name: name.into(),
            password: password.into(),
        }
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn credentials(&self) -> (String, String) {
        (self.name.clone(), self.password.clone())
    }
}

/// The password stays out of logs and panics.
impl std::fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Checks that the endpoints agree on a scheme that `tls` fits: `https` needs a CA
/// to trust, and TLS material given for `http` would be silently unused.
pub(super) fn check_endpoints(endpoints: &[&str], tls: Option<&EtcdTls>) -> Result<()> {
    if endpoints.is_empty() {
        return Err(Error::Config("no etcd endpoint given".into()));
    }
    let https = endpoints[0].starts_with("https://");
    let scheme = if https { "https://" } else { "http://" };
    if let Some(bad) = endpoints.iter().find(|e| !e.starts_with(scheme)) {
        return Err(Error::Config(format!(
            "etcd endpoint {bad:?}: expected {scheme}HOST:PORT, like {:?}",
            endpoints[0]
        )));
    }
    match (https, tls.is_some()) {
        (true, false) => Err(Error::Config(format!(
            "etcd endpoint {:?} is https: give the CA certificate that signs etcd's",
            endpoints[0]
        ))),
        (false, true) => Err(Error::Config(format!(
            "etcd endpoint {:?} is http: TLS needs https://HOST:PORT",
            endpoints[0]
        ))),
        _ => Ok(()),
    }
}

/// `options` with TLS added when given. The user is not among them: it authenticates
/// on first use (see `EtcdCoordinator::client`), so an etcd down at start is waited for.
pub(super) fn with_tls(options: ConnectOptions, tls: Option<&EtcdTls>) -> ConnectOptions {
    match tls {
        Some(tls) => options.with_tls(tls.options()),
        None => options,
    }
}

/// The error of setting up a client of `endpoints`: bad TLS material is found here.
/// tonic's transport error shows its cause only as its source, so the causes are
/// spelt out.
pub(super) fn connect_error(endpoints: &[&str], e: etcd_client::Error) -> Error {
    let why = match e {
        etcd_client::Error::TransportError(e) => {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                why = format!("{why}: {cause}");
                source = cause.source();
            }
            why
        }
        other => other.to_string(),
    };
    Error::Config(format!("etcd endpoints {endpoints:?}: {why}"))
}

/// The error of authenticating as `user`: etcd's refusal (a wrong password, auth not
/// enabled) is a configuration error, which ends a start-up; failing to reach etcd is
/// `Unavailable`, waited out.
pub(super) fn authentication_error(user: &EtcdUser, e: etcd_client::Error) -> Error {
    match e {
        etcd_client::Error::GRpcStatus(status)
            if matches!(
                status.code(),
                Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::PermissionDenied
                    | Code::Unauthenticated
            ) =>
        {
            Error::Config(format!(
                "etcd refused user {:?}: {}",
                user.name,
                status.message()
            ))
        }
        other => super::etcd::error(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_share_a_scheme_that_fits_the_tls_given() {
        let tls = EtcdTls::new("ca");
        assert!(check_endpoints(&["http://a:1", "http://b:1"], None).is_ok());
        assert!(check_endpoints(&["https://a:1", "https://b:1"], Some(&tls)).is_ok());
        let fails = |endpoints: &[&str], tls: Option<&EtcdTls>, says: &str| match check_endpoints(
            endpoints, tls,
        ) {
            Err(Error::Config(why)) => assert!(why.contains(says), "{why}"),
            other => panic!("{endpoints:?}: {other:?}"),
        };
        fails(&[], None, "no etcd endpoint");
        fails(&["https://a:1"], None, "give the CA certificate");
        fails(&["http://a:1"], Some(&tls), "TLS needs https");
        fails(
            &["https://a:1", "http://b:1"],
            Some(&tls),
            "expected https://",
        );
        fails(&["a:1"], None, "expected http://");
    }

    #[tokio::test]
    async fn an_unreadable_client_key_fails_the_connect_with_its_cause() {
        let key = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
        let config = crate::discovery::EtcdConfig {
            tls: Some(EtcdTls::new("").with_identity("", key)),
            ..Default::default()
        };
        let failed = crate::discovery::EtcdCoordinator::connect(&["https://127.0.0.1:1"], config);
        match failed.await {
            Err(Error::Config(why)) => assert!(why.contains("private key"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// The user authenticates on first use, so an etcd not up yet is `Unavailable`
    /// (waited for by a joining node), not a refusal that ends its start-up.
    #[tokio::test]
    async fn a_user_for_an_etcd_out_of_reach_is_waited_for() {
        use crate::discovery::Coordinator;
        let config = crate::discovery::EtcdConfig {
            user: Some(EtcdUser::new("cache", "pw")),
            ..Default::default()
        };
        let c = crate::discovery::EtcdCoordinator::connect(&["http://127.0.0.1:1"], config)
            .await
            .expect("nothing is dialled yet");
        match c.range("/k").await {
            Err(Error::Unavailable(_) | Error::Timeout) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let user = format!("{:?}", EtcdUser::new("cache", "s3cret"));
        assert!(user.contains("cache") && !user.contains("s3cret"), "{user}");
        let tls = format!("{:?}", EtcdTls::new("ca").with_identity("cert", "KEYDATA"));
        assert!(!tls.contains("KEYDATA"), "{tls}");
    }
}
