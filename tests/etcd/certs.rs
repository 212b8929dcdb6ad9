//! Certificates for an etcd over TLS, made by the test with rcgen: a CA, etcd's server
//! certificate for 127.0.0.1 and localhost, and client certificates, written as PEM
//! files into a directory of the test's own. rcgen's default validity (1975 to 4096)
//! keeps them valid by the wall clock that TLS checks.

use std::path::PathBuf;

use peercache::discovery::EtcdTls;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

use crate::common::process::TempDir;

/// A certificate and its key, as PEM files.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// Client TLS trusting `ca` and showing this certificate.
    pub fn tls(&self, ca: &Pki) -> EtcdTls {
        EtcdTls::new(read(&ca.ca_file())).with_identity(read(&self.cert), read(&self.key))
    }
}

fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A CA of the test's own, and the directory of its files.
pub struct Pki {
    name: String,
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: TempDir,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `<name>-ca.pem`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pki = Pki {
            name: name.to_owned(),
            ca,
            dir: TempDir::new(&format!("pki-{name}")),
        };
        std::fs::write(pki.ca_file(), pki.ca.pem()).unwrap();
        pki
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join(format!("{}-ca.pem", self.name))
    }

    /// etcd's certificate, for 127.0.0.1 and localhost. It is a client certificate
    /// too: etcd's gRPC gateway dials etcd itself with it.
    pub fn server(&self) -> CertFiles {
        self.sign(
            "etcd",
            &["127.0.0.1", "localhost"],
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate with common name `name`.
    pub fn client(&self, name: &str) -> CertFiles {
        self.sign(name, &[], vec![ExtendedKeyUsagePurpose::ClientAuth])
    }

    fn sign(&self, name: &str, sans: &[&str], usages: Vec<ExtendedKeyUsagePurpose>) -> CertFiles {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let files = CertFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}
