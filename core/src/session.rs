//! Who may use an MCP session, and where a user's server state lives. A session belongs to the
//! caller that opened it: the subject and the client id the gateway established from the access
//! token (the identity headers of [`crate::identity`]). Any other caller is answered exactly as
//! if the session did not exist, so session ids, stream ids and event ids reveal nothing to
//! another user. The bridge is the shell that applies this; it trusts the identity headers only
//! because it is reachable through the gateway alone.

use sha2::{Digest, Sha256};

use crate::identity;

/// The caller of one request, as the gateway's identity headers state it: the values as they
/// travel ([`identity::encode`]d), which name one subject and one client exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<'a> {
    /// `x-mcpgw-subject`: the token's `sub`.
    pub subject: &'a str,
    /// `x-mcpgw-client-id`: the token's `client_id` (empty when the header is absent).
    pub client_id: &'a str,
}

/// Why a request carries no usable caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallerError {
    /// No (or an empty) `x-mcpgw-subject`: the request did not come through the gateway.
    #[error("no x-mcpgw-subject header: only requests authenticated by the gateway are served")]
    NoSubject,
    /// An identity header appears more than once.
    #[error("identity header {0} appears more than once")]
    Repeated(&'static str),
    /// An identity header's value is not one the gateway writes ([`identity::decode`] refuses it).
    #[error("identity header {0} is not in the gateway's encoding")]
    Undecodable(&'static str),
}

impl<'a> Caller<'a> {
    /// The caller from a request's identity headers. `values(name)` returns every value of the
    /// header `name`; a value repeated is refused, never picked from.
    pub fn from_headers<I>(mut values: impl FnMut(&'static str) -> I) -> Result<Self, CallerError>
    where
        I: Iterator<Item = &'a str>,
    {
        let mut one = |name: &'static str| {
            let mut all = values(name);
            let first = all.next();
            match all.next() {
                Some(_) => Err(CallerError::Repeated(name)),
                None => Ok(first.unwrap_or("")),
            }
        };
        let subject = one(identity::SUBJECT)?;
        let client_id = one(identity::CLIENT_ID)?;
        if subject.is_empty() {
            return Err(CallerError::NoSubject);
        }
        for (name, value) in [
            (identity::SUBJECT, subject),
            (identity::CLIENT_ID, client_id),
        ] {
            if identity::decode(value).is_none() {
                return Err(CallerError::Undecodable(name));
            }
        }
        Ok(Caller { subject, client_id })
    }

    /// The name of this user's private directory: hex of SHA-256 over the subject, so no subject
    /// (`..`, `/`, control characters, any length) is ever used as a path, and two subjects never
    /// share one.
    pub fn storage_key(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"mcpgw user directory\0")
            .chain_update(self.subject.as_bytes())
            .finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Whom a session belongs to: the caller that opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    subject: String,
    client_id: String,
}

impl SessionOwner {
    /// The owner of a session `caller` opens.
    pub fn new(caller: &Caller<'_>) -> Self {
        SessionOwner {
            subject: caller.subject.to_owned(),
            client_id: caller.client_id.to_owned(),
        }
    }

    /// Whether `caller` may use the session: the same subject through the same client. Anyone
    /// else gets the answer for an unknown session.
    pub fn admits(&self, caller: &Caller<'_>) -> bool {
        self.subject == caller.subject && self.client_id == caller.client_id
    }

    /// The owner's subject (safe to log).
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(
        pairs: &'a [(&'static str, &'a str)],
    ) -> impl FnMut(&'static str) -> std::vec::IntoIter<&'a str> {
        move |name| {
            pairs
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .collect::<Vec<_>>()
                .into_iter()
        }
    }

    #[test]
    fn a_session_admits_only_its_opener() {
        let alice = Caller {
            subject: "oidc:alice",
            client_id: "c1",
        };
        let owner = SessionOwner::new(&alice);
        assert!(owner.admits(&alice));
        for other in [
            Caller {
                subject: "oidc:bob",
                client_id: "c1",
            },
            Caller {
                subject: "oidc:alice",
                client_id: "c2",
            },
            Caller {
                subject: "oidc:alice ",
                client_id: "c1",
            },
            Caller {
                subject: "OIDC:ALICE",
                client_id: "c1",
            },
        ] {
            assert!(!owner.admits(&other), "{other:?}");
        }
    }

    #[test]
    fn callers_come_from_exactly_one_subject_header() {
        let ok = [
            (identity::SUBJECT, "oidc:alice"),
            (identity::CLIENT_ID, "c1"),
        ];
        assert_eq!(
            Caller::from_headers(headers(&ok)),
            Ok(Caller {
                subject: "oidc:alice",
                client_id: "c1"
            })
        );
        assert_eq!(
            Caller::from_headers(headers(&[(identity::CLIENT_ID, "c1")])),
            Err(CallerError::NoSubject)
        );
        assert_eq!(
            Caller::from_headers(headers(&[(identity::SUBJECT, "")])),
            Err(CallerError::NoSubject)
        );
        let raw = [(identity::SUBJECT, "oidc:al ice")];
        assert_eq!(
            Caller::from_headers(headers(&raw)),
            Err(CallerError::Undecodable(identity::SUBJECT))
        );
        let encoded = [(identity::SUBJECT, "oidc:al%20ice")];
        assert!(Caller::from_headers(headers(&encoded)).is_ok());
        let twice = [
            (identity::SUBJECT, "oidc:bob"),
            (identity::SUBJECT, "oidc:alice"),
        ];
        assert_eq!(
            Caller::from_headers(headers(&twice)),
            Err(CallerError::Repeated(identity::SUBJECT))
        );
    }

    #[test]
    fn storage_keys_are_hex_digests_never_the_subject() {
        let key = |s| {
            Caller {
                subject: s,
                client_id: "",
            }
            .storage_key()
        };
        let long = "x".repeat(5000);
        for s in ["../../etc", "a/b", "oidc:alice", "\u{0}", long.as_str()] {
            let k = key(s);
            assert_eq!(k.len(), 64);
            assert!(k.bytes().all(|b| b.is_ascii_hexdigit()), "{k}");
        }
        assert_ne!(key("oidc:alice"), key("oidc:bob"));
        assert_eq!(key("oidc:alice"), key("oidc:alice"));
    }
}
