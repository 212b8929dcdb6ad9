//! Client authentication: bearer tokens, each with a role, independent of the transport
//! that carries them (the HTTP API's middleware in http/auth.rs; any later front that
//! presents a token the same way).
//!
//! # The token file
//!
//! One token a line, its role first, separated by white space:
//!
//! ```text
//! # dashboards and readers
//! read   3f9c1e0a7b6d4c2e8f1a5b7c9d0e2f4a
//! write  b8e2d4f6a1c3e5f7092b4d6f8a0c2e4f
//! admin  0a1b2c3d4e5f60718293a4b5c6d7e8f9
//! ```
//!
//! Blank lines and lines whose first non-blank character is `#` are ignored; a `#` after
//! the token is not a comment (the line then has three fields and is refused). Roles:
//!
//! - `read`: reads of keys;
//! - `write`: reads, and writes and removals of keys;
//! - `admin`: everything, node-wide views (stats, ring, metrics) included.
//!
//! A token is at least [`MIN_TOKEN_LEN`] bytes of visible ASCII (what a header or a
//! command argument carries unchanged). A malformed line, an unknown role, a short token,
//! a token given twice, or a file without tokens is refused with its line number; no
//! error repeats a token.
//!
//! Tokens are kept as SHA-256 digests, and [`Tokens::role_of`] compares the presented
//! token's digest with every one in constant time, so neither the time an answer takes
//! nor its outcome tells how much of a guess was right, or how long a real token is.

use std::path::Path;

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::error::{Error, Result};

/// The fewest bytes a token may have.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token's holder may do; each role includes those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads of keys.
    Read = 0,
    /// Reads, writes and removals of keys.
    Write = 1,
    /// Everything: the node-wide views and any administrative operation too.
    Admin = 2,
}

/// What a request asks to do, as far as authorization goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Reading a key.
    Read,
    /// Writing or removing a key.
    Write,
    /// Reading the node's state (stats, ring, metrics) or changing it.
    Admin,
}

impl Action {
    /// The least role that permits the action.
    pub fn least_role(self) -> Role {
        match self {
            Action::Read => Role::Read,
            Action::Write => Role::Write,
            Action::Admin => Role::Admin,
        }
    }
}

impl Role {
    /// Whether the role permits `action`.
    pub fn allows(self, action: Action) -> bool {
        self >= action.least_role()
    }

    /// The role's name in the token file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    fn from_index(i: u8) -> Role {
        match i {
            0 => Role::Read,
            1 => Role::Write,
            _ => Role::Admin,
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            _ => Err(format!(
                "unknown role {s:?} (expected read, write or admin)"
            )),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No token was presented.
    Missing,
    /// The token presented is not one of the configured tokens.
    Invalid,
    /// The token is valid, but its role does not permit the action.
    Forbidden,
}

impl Refusal {
    /// Whether the client is unknown (no or a wrong token) rather than known but not
    /// permitted: HTTP's 401 against 403.
    pub fn is_unauthorized(self) -> bool {
        !matches!(self, Refusal::Forbidden)
    }
}

type Digest = [u8; 32];

fn digest(token: &[u8]) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    d.as_ref().try_into().expect("a SHA-256 digest is 32 bytes")
}

/// The configured tokens and their roles.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<(Digest, Role)>,
}

impl std::fmt::Debug for Tokens {
    /// Counts, never tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish()
    }
}

impl Tokens {
    /// Reads the token file at `path` (the format is in the module docs).
    pub fn load(path: impl AsRef<Path>) -> Result<Tokens> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("auth file {}: {e}", path.display())))?;
        Self::parse_lines(&text)
            .map_err(|e| Error::Config(format!("auth file {}: {e}", path.display())))
    }

    /// Tokens from the text of a token file.
    pub fn parse(text: &str) -> Result<Tokens> {
        Self::parse_lines(text).map_err(|e| Error::Config(format!("auth tokens: {e}")))
    }

    fn parse_lines(text: &str) -> std::result::Result<Tokens, String> {
        // (digest, role, line), to name the first line of a duplicate.
        let mut seen: Vec<(Digest, Role, usize)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [role, token] = fields[..] else {
                return Err(format!(
                    "line {n}: expected `ROLE TOKEN`, found {} fields",
                    fields.len()
                ));
            };
            let role: Role = role.parse().map_err(|e| format!("line {n}: {e}"))?;
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {n}: the token is {} bytes, at least {MIN_TOKEN_LEN} are needed",
                    token.len()
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!(
                    "line {n}: the token has characters other than visible ASCII"
                ));
            }
            let d = digest(token.as_bytes());
            if let Some((_, _, first)) = seen.iter().find(|(s, _, _)| *s == d) {
                return Err(format!("line {n}: the same token as line {first}"));
            }
            seen.push((d, role, n));
        }
        if seen.is_empty() {
            return Err("no tokens".to_owned());
        }
        Ok(Tokens {
            entries: seen.into_iter().map(|(d, role, _)| (d, role)).collect(),
        })
    }

    /// The role of `presented`, if it is one of the tokens. Takes the same time whether
    /// and wherever it matches: every configured token is compared, in constant time.
    pub fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let presented = digest(presented);
        let mut found = Choice::from(0);
        let mut role = 0u8;
        for (d, r) in &self.entries {
            let hit = d.as_slice().ct_eq(presented.as_slice());
            role.conditional_assign(&(*r as u8), hit);
            found |= hit;
        }
        bool::from(found).then(|| Role::from_index(role))
    }

    /// Whether `presented` (None: no token given) may do `action`: its role, or why not.
    pub fn authorize(
        &self,
        presented: Option<&[u8]>,
        action: Action,
    ) -> std::result::Result<Role, Refusal> {
        let role = self
            .role_of(presented.ok_or(Refusal::Missing)?)
            .ok_or(Refusal::Invalid)?;
        if role.allows(action) {
            Ok(role)
        } else {
            Err(Refusal::Forbidden)
        }
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none (never, for tokens that parsed).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests;
