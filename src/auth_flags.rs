//! `peercache serve`'s client-authentication flags: the token file and whether
//! `/metrics` needs a token too. (A module of the binary, not of the library.)

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use arc_swap::ArcSwap;
use clap::Args;
use peercache::auth::Tokens;
use peercache::http::ClientAuth;

/// Client authentication of the HTTP API.
#[derive(Args, Clone)]
pub struct AuthArgs {
    /// A file of client tokens, one `ROLE TOKEN` a line (roles read, write, admin; `#`
    /// starts a comment line; tokens at least 16 bytes): HTTP requests then need
    /// `Authorization: Bearer TOKEN`, except /healthz and (without --auth-metrics)
    /// /metrics. Without it the API is open.
    #[arg(long, env = "PEERCACHE_AUTH_FILE")]
    auth_file: Option<PathBuf>,
    /// Require an admin token for /metrics too.
    #[arg(long, env = "PEERCACHE_AUTH_METRICS")]
    auth_metrics: bool,
}

impl AuthArgs {
    /// The tokens of --auth-file, read now so that a bad file stops the start.
    pub fn client_auth(&self) -> anyhow::Result<Option<ClientAuth>> {
        let Some(path) = &self.auth_file else {
            // Not clap's `requires`: that would count PEERCACHE_AUTH_METRICS=false too.
            if self.auth_metrics {
                bail!("--auth-metrics needs --auth-file: there is no token to ask for");
            }
            return Ok(None);
        };
        let tokens = Tokens::load(path)?;
        warn_if_others_read(path);
        tracing::info!(tokens = tokens.len(), file = %path.display(), metrics = self.auth_metrics, "clients authenticate with bearer tokens");
        Ok(Some(ClientAuth {
            tokens: Arc::new(ArcSwap::from_pointee(tokens)),
            protect_metrics: self.auth_metrics,
        }))
    }

    /// Reads --auth-file again into `auth` (SIGHUP): the new tokens replace the old at
    /// once; a file that no longer reads or parses leaves the old ones in force.
    pub fn reload(&self, auth: &ClientAuth) {
        let Some(path) = &self.auth_file else { return };
        match Tokens::load(path) {
            Ok(tokens) => {
                warn_if_others_read(path);
                tracing::info!(tokens = tokens.len(), file = %path.display(), "reloaded the client tokens");
                auth.tokens.store(Arc::new(tokens));
            }
            Err(e) => {
                tracing::error!(error = %e, "reloading the client tokens failed; the old tokens stay in force")
            }
        }
    }
}

/// Tokens are secrets: a file others on the host may read is worth a warning.
fn warn_if_others_read(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o044 != 0
        {
            tracing::warn!(file = %path.display(), "the auth file is readable by its group or other users; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
