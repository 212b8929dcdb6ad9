//! `peercache serve`'s flags for reaching a secured etcd: TLS (the CA, a client
//! certificate) and a user whose password comes from the environment or a file, never
//! from the command line, where `ps` shows it. (A module of the binary, not of the
//! library.)

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use peercache::discovery::{EtcdConfig, EtcdTls, EtcdUser};

/// The environment variable holding the password of `--etcd-user`.
const PASSWORD_ENV: &str = "PEERCACHE_ETCD_PASSWORD";

#[derive(Args)]
pub struct EtcdArgs {
    /// A PEM file of the CA certificates that sign etcd's server certificate; required
    /// for https:// etcd endpoints, and the only CAs trusted for them.
    #[arg(long, env = "PEERCACHE_ETCD_CA", requires = "etcd")]
    etcd_ca: Option<PathBuf>,
    /// A PEM client certificate to show etcd (for its --client-cert-auth), with
    /// --etcd-key.
    #[arg(long, env = "PEERCACHE_ETCD_CERT", requires_all = ["etcd_ca", "etcd_key"])]
    etcd_cert: Option<PathBuf>,
    /// The PEM private key of --etcd-cert.
    #[arg(long, env = "PEERCACHE_ETCD_KEY", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// An etcd user to authenticate as (etcd with `auth enable`). Its password comes
    /// from the environment variable PEERCACHE_ETCD_PASSWORD or from
    /// --etcd-password-file.
    #[arg(long, env = "PEERCACHE_ETCD_USER", requires = "etcd")]
    etcd_user: Option<String>,
    /// A file holding the password of --etcd-user (one trailing newline is ignored).
    #[arg(long, env = "PEERCACHE_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    etcd_password_file: Option<PathBuf>,
}

impl EtcdArgs {
    /// The coordinator's configuration for `endpoints`: defaults, with the TLS material
    /// and the user read in.
    pub fn config(&self, endpoints: &[String]) -> anyhow::Result<EtcdConfig> {
        let https = endpoints.iter().any(|e| e.starts_with("https://"));
        let tls = match (&self.etcd_ca, https) {
            (None, true) => bail!(
                "--etcd {}: an https endpoint needs --etcd-ca, the CA certificate that signs \
                 etcd's server certificate",
                endpoints.join(",")
            ),
            (Some(_), false) => bail!(
                "--etcd-ca, --etcd-cert and --etcd-key are for https:// etcd endpoints; --etcd is {}",
                endpoints.join(",")
            ),
            (None, false) => None,
            (Some(ca), true) => Some(self.tls(ca)?),
        };
        let user = match &self.etcd_user {
            Some(name) => Some(EtcdUser::new(name, self.password()?)),
            None => None,
        };
        Ok(EtcdConfig {
            tls,
            user,
            ..EtcdConfig::default()
        })
    }

    fn tls(&self, ca: &Path) -> anyhow::Result<EtcdTls> {
        let tls = EtcdTls::new(pem(ca, "--etcd-ca", "CERTIFICATE")?);
        Ok(match (&self.etcd_cert, &self.etcd_key) {
            (Some(cert), Some(key)) => tls.with_identity(
                pem(cert, "--etcd-cert", "CERTIFICATE")?,
                pem(key, "--etcd-key", "PRIVATE KEY")?,
            ),
            (None, None) => tls,
            // clap's `requires` sees to this; the check stays for the environment's
            // spelling of the same mistake.
            _ => bail!("--etcd-cert and --etcd-key go together"),
        })
    }

    /// The password of `--etcd-user`, from exactly one of its two sources.
    fn password(&self) -> anyhow::Result<String> {
        let from_env = std::env::var(PASSWORD_ENV).ok();
        let password = match (&self.etcd_password_file, from_env) {
            (Some(_), Some(_)) => bail!(
                "the password of --etcd-user comes from {PASSWORD_ENV} or --etcd-password-file, \
                 not both"
            ),
            (Some(file), None) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading --etcd-password-file {}", file.display()))?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                text.strip_suffix('\r').unwrap_or(text).to_owned()
            }
            (None, Some(password)) => password,
            (None, None) => bail!(
                "--etcd-user needs a password: set {PASSWORD_ENV} or give --etcd-password-file"
            ),
        };
        if password.is_empty() {
            bail!("the password of --etcd-user is empty");
        }
        Ok(password)
    }
}

/// The contents of `path`, given as `flag`, which must hold a PEM `kind` (e.g.
/// `CERTIFICATE`; `PRIVATE KEY` also matches `RSA PRIVATE KEY`).
fn pem(path: &Path, flag: &str, kind: &str) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let end = format!("{kind}-----");
    let found = (text.lines()).any(|l| l.starts_with("-----BEGIN ") && l.ends_with(&end));
    if !found {
        bail!("{flag} {}: holds no PEM {kind}", path.display());
    }
    Ok(bytes)
}
