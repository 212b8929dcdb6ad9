//! A connection's state: its protocol version, database, name, and the token it
//! authenticated with. The token's role is looked up again whenever the node's tokens
//! are replaced (SIGHUP), so a token taken out of the file stops working on
//! connections already open too.

use std::sync::Arc;

use bytes::Bytes;

use super::frame::{Frame, Proto};
use crate::auth::{Action, Refusal, Role, Tokens};
use crate::http::ClientAuth;

/// One client connection's state.
pub(super) struct Session {
    /// Unique among this node's connections (`CLIENT ID`).
    pub id: u64,
    pub proto: Proto,
    /// Index of the selected group.
    pub db: usize,
    pub name: Option<Bytes>,
    token: Option<Vec<u8>>,
    /// The tokens the role was last looked up in, and that role.
    checked: Option<(Arc<Tokens>, Option<Role>)>,
}

impl Session {
    pub fn new(id: u64, db: usize) -> Self {
        Session {
            id,
            proto: Proto::Resp2,
            db,
            name: None,
            token: None,
            checked: None,
        }
    }

    /// `AUTH [user] token`: the user name is ignored (tokens carry the role). A token
    /// that is not valid leaves the session as it was.
    pub fn login(&mut self, auth: Option<&ClientAuth>, token: &[u8]) -> Result<Role, Frame> {
        let Some(auth) = auth else {
            return Err(Frame::error(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ));
        };
        let tokens = auth.tokens.load_full();
        let Some(role) = tokens.role_of(token) else {
            return Err(Frame::error(
                "WRONGPASS invalid username-password pair or user is disabled.",
            ));
        };
        self.token = Some(token.to_vec());
        self.checked = Some((tokens, Some(role)));
        Ok(role)
    }

    /// Whether the session may run a command needing `action` (None: only a login).
    pub fn authorize(&mut self, auth: &ClientAuth, action: Option<Action>) -> Result<(), Refusal> {
        let tokens = auth.tokens.load_full();
        let role = match &self.checked {
            Some((seen, role)) if Arc::ptr_eq(seen, &tokens) => *role,
            _ => {
                let role = self.token.as_deref().and_then(|t| tokens.role_of(t));
                self.checked = Some((tokens, role));
                role
            }
        };
        match (self.token.is_some(), role) {
            (false, _) => Err(Refusal::Missing),
            (true, None) => Err(Refusal::Invalid),
            (true, Some(role)) if action.is_some_and(|a| !role.allows(a)) => {
                Err(Refusal::Forbidden)
            }
            _ => Ok(()),
        }
    }
}

/// The reply to a refused command.
pub(super) fn refusal(refusal: Refusal, action: Option<Action>) -> Frame {
    match (refusal, action) {
        (Refusal::Forbidden, Some(action)) => Frame::error(format!(
            "NOPERM this command needs a token of the {} role",
            action.least_role().as_str()
        )),
        (Refusal::Invalid, _) => {
            Frame::error("NOAUTH the token this connection authenticated with is no longer valid")
        }
        _ => Frame::error("NOAUTH Authentication required."),
    }
}
