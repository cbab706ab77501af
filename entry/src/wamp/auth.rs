//! WAMP authentication (ticket and WAMP-CRA) and per-realm, per-URI-prefix
//! permissions, from the `users` section of the configuration.
//!
//! ```text
//!  HELLO(realm, authid, authmethods) ─► on_hello ─┬─ Welcome(grant)             (anonymous)
//!                                                 ├─ Challenge(method, extra) ─► AUTHENTICATE ─► on_authenticate ─► grant
//!                                                 └─ Abort(uri)
//!  every PUBLISH / SUBSCRIBE / CALL / REGISTER ─► Grant::allows(realm, uri, action)
//! ```
//!
//! Sans-IO: the caller supplies the nonce and the time for a WAMP-CRA
//! challenge. Secrets are compared in constant time (through HMAC verify).
//!
//! Salted WAMP-CRA (a user with `salt`): the CHALLENGE carries `salt`,
//! `iterations` and `keylen`, and the signing key is the base64 text of
//! PBKDF2-HMAC-SHA256(secret, salt, iterations, keylen), as autobahn's
//! `auth.derive_key` computes it on the client.

use ordo_common::wamp::{value::base64_encode, Dict, Value};
use ring::{hmac, pbkdf2};
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// PBKDF2 iterations of a salted WAMP-CRA user that gives none (autobahn's default).
pub const DEFAULT_ITERATIONS: u32 = 1000;
/// Derived key length in bytes of a salted WAMP-CRA user that gives none (autobahn's default).
pub const DEFAULT_KEYLEN: u32 = 32;
/// The longest derived key accepted, in bytes.
pub const MAX_KEYLEN: u32 = 1024;

/// One user that may authenticate.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct User {
    /// The authid the client announces in HELLO.
    pub authid: String,
    /// The authrole it gets (default `user`).
    pub role: String,
    /// Ticket for `ticket` authentication, if that method is allowed.
    pub ticket: Option<String>,
    /// Secret for `wampcra` authentication, if that method is allowed.
    pub secret: Option<String>,
    /// WAMP-CRA salt: when set, the signing key is derived from `secret` with PBKDF2.
    pub salt: Option<String>,
    /// PBKDF2 iterations for a salted secret ([`DEFAULT_ITERATIONS`] if unset).
    pub iterations: Option<u32>,
    /// Derived key length in bytes for a salted secret ([`DEFAULT_KEYLEN`] if unset).
    pub keylen: Option<u32>,
    /// What the user may do; the longest matching prefix in the realm decides.
    pub permissions: Vec<Permission>,
}

/// What a user may do on URIs that start with `prefix` in `realm` (`*`: any realm).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Permission {
    /// Realm, or `*`.
    pub realm: String,
    /// URI prefix (`""` matches every URI).
    pub prefix: String,
    /// May publish.
    pub publish: bool,
    /// May subscribe.
    pub subscribe: bool,
    /// May call.
    pub call: bool,
    /// May register.
    pub register: bool,
}

/// A user entry the configuration cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// `iterations` is 0.
    #[error("user {0:?}: iterations must be at least 1")]
    NoIterations(String),
    /// `keylen` is 0 or over [`MAX_KEYLEN`].
    #[error("user {0:?}: keylen must be 1 to {MAX_KEYLEN}")]
    KeyLength(String),
    /// `iterations` or `keylen` without `salt`.
    #[error("user {0:?}: iterations and keylen only apply with a salt")]
    NoSalt(String),
}

impl User {
    /// Return the PBKDF2 parameters (salt, iterations, key length) of a salted secret.
    fn salting(&self) -> Option<(&str, u32, u32)> {
        let salt = self.salt.as_deref()?;
        let iterations = self.iterations.unwrap_or(DEFAULT_ITERATIONS);
        Some((salt, iterations, self.keylen.unwrap_or(DEFAULT_KEYLEN)))
    }

    /// Return the WAMP-CRA signing key: the secret, or for a salted user the
    /// base64 of its PBKDF2-derived key. `None` without a usable secret.
    ///
    /// Costs `iterations` HMACs: call it off the async executor.
    pub fn cra_key(&self) -> Option<String> {
        let secret = self.secret.as_deref()?;
        let Some((salt, iterations, keylen)) = self.salting() else {
            return Some(secret.to_owned());
        };
        let iterations = NonZeroU32::new(iterations)?;
        if keylen == 0 || keylen > MAX_KEYLEN {
            return None;
        }
        let mut key = vec![0u8; keylen as usize];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            salt.as_bytes(),
            secret.as_bytes(),
            &mut key,
        );
        Some(base64_encode(&key))
    }
}

/// Check the users of a configuration before serving them.
pub fn check_users(users: &[User]) -> Result<(), UserError> {
    for user in users {
        let id = || user.authid.clone();
        if user.salt.is_none() && (user.iterations.is_some() || user.keylen.is_some()) {
            return Err(UserError::NoSalt(id()));
        }
        if user.iterations == Some(0) {
            return Err(UserError::NoIterations(id()));
        }
        if user.keylen.is_some_and(|k| k == 0 || k > MAX_KEYLEN) {
            return Err(UserError::KeyLength(id()));
        }
    }
    Ok(())
}

/// An action that needs permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// PUBLISH.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
    /// CALL.
    Call,
    /// REGISTER.
    Register,
}

/// Who a session is and what it may do.
#[derive(Clone, Debug, PartialEq)]
pub struct Grant {
    /// Authentication id.
    pub authid: Option<String>,
    /// Authentication role.
    pub authrole: String,
    /// `anonymous`, `ticket` or `wampcra`.
    pub authmethod: &'static str,
    /// `None`: anonymous, everything allowed.
    pub permissions: Option<Vec<Permission>>,
}

impl Grant {
    /// Tell whether this session may do `action` on `uri` in `realm`.
    pub fn allows(&self, realm: &str, uri: &str, action: Action) -> bool {
        let Some(permissions) = &self.permissions else {
            return true;
        };
        let best = permissions
            .iter()
            .filter(|p| (p.realm == realm || p.realm == "*") && uri.starts_with(p.prefix.as_str()))
            .max_by_key(|p| p.prefix.len());
        best.is_some_and(|p| match action {
            Action::Publish => p.publish,
            Action::Subscribe => p.subscribe,
            Action::Call => p.call,
            Action::Register => p.register,
        })
    }
}

/// A challenge sent, waiting for AUTHENTICATE.
#[derive(Clone, Debug)]
pub struct Pending {
    user: User,
    method: &'static str,
    challenge: String,
}

/// What to answer a HELLO with.
#[derive(Debug)]
pub enum HelloDecision {
    /// Join at once.
    Welcome(Grant),
    /// Send CHALLENGE(method, extra) and wait for AUTHENTICATE.
    Challenge {
        /// `ticket` or `wampcra`.
        method: &'static str,
        /// CHALLENGE extra.
        extra: Dict,
        /// What AUTHENTICATE is checked against.
        pending: Pending,
    },
    /// ABORT with this reason URI.
    Abort(&'static str),
}

/// Decide a HELLO. `nonce` and `now` (the time, as text) go into a WAMP-CRA challenge.
pub fn on_hello(
    users: &[User],
    allow_anonymous: bool,
    realm: &str,
    details: &Dict,
    nonce: &str,
    now: &str,
) -> HelloDecision {
    let methods: Vec<&str> = details
        .get("authmethods")
        .and_then(Value::as_array)
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let authid = details.get("authid").and_then(Value::as_str);
    let user = authid.and_then(|id| users.iter().find(|u| u.authid == id));
    let wants_auth = methods.iter().any(|m| *m != "anonymous");
    if let Some(user) = user {
        let joins_realm = user
            .permissions
            .iter()
            .any(|p| p.realm == realm || p.realm == "*");
        for method in &methods {
            let pending = |method, challenge: String| Pending {
                user: user.clone(),
                method,
                challenge,
            };
            match *method {
                "wampcra" if user.secret.is_some() => {
                    if !joins_realm {
                        return HelloDecision::Abort("wamp.error.not_authorized");
                    }
                    let challenge = serde_json::json!({
                        "authid": user.authid,
                        "authrole": role(user),
                        "authmethod": "wampcra",
                        "authprovider": "static",
                        "nonce": nonce,
                        "timestamp": now,
                        "session": 0,
                    })
                    .to_string();
                    let mut extra = Dict::new();
                    extra.insert("challenge".into(), Value::from(challenge.as_str()));
                    if let Some((salt, iterations, keylen)) = user.salting() {
                        extra.insert("salt".into(), Value::from(salt));
                        extra.insert("iterations".into(), Value::from(u64::from(iterations)));
                        extra.insert("keylen".into(), Value::from(u64::from(keylen)));
                    }
                    return HelloDecision::Challenge {
                        method: "wampcra",
                        extra,
                        pending: pending("wampcra", challenge),
                    };
                }
                "ticket" if user.ticket.is_some() => {
                    if !joins_realm {
                        return HelloDecision::Abort("wamp.error.not_authorized");
                    }
                    return HelloDecision::Challenge {
                        method: "ticket",
                        extra: Dict::new(),
                        pending: pending("ticket", String::new()),
                    };
                }
                _ => {}
            }
        }
    }
    if allow_anonymous && (!wants_auth || methods.contains(&"anonymous")) {
        return HelloDecision::Welcome(Grant {
            authid: authid.map(str::to_owned),
            authrole: "anonymous".into(),
            authmethod: "anonymous",
            permissions: None,
        });
    }
    HelloDecision::Abort(if wants_auth {
        "wamp.error.authentication_failed"
    } else {
        "wamp.error.no_auth_method"
    })
}

pub(crate) fn role(user: &User) -> &str {
    if user.role.is_empty() {
        "user"
    } else {
        &user.role
    }
}

/// Check an AUTHENTICATE signature; the grant on success.
///
/// A salted WAMP-CRA user's key is derived here (PBKDF2): call it off the async executor.
pub fn on_authenticate(pending: &Pending, signature: &str) -> Option<Grant> {
    let ok = match pending.method {
        "ticket" => pending
            .user
            .ticket
            .as_deref()
            .is_some_and(|t| same_secret(t.as_bytes(), signature.as_bytes())),
        "wampcra" => pending.user.cra_key().is_some_and(|key| {
            same_secret(
                cra_signature(&key, &pending.challenge).as_bytes(),
                signature.as_bytes(),
            )
        }),
        _ => false,
    };
    ok.then(|| Grant {
        authid: Some(pending.user.authid.clone()),
        authrole: role(&pending.user).to_owned(),
        authmethod: pending.method,
        permissions: Some(pending.user.permissions.clone()),
    })
}

/// Return the WAMP-CRA signature of a challenge: base64(HMAC-SHA256(key, challenge)),
/// the key being the secret or, salted, the base64 of its derived key ([`User::cra_key`]).
pub fn cra_signature(secret: &str, challenge: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    base64_encode(hmac::sign(&key, challenge.as_bytes()).as_ref())
}

/// Compare two secrets in constant time (HMAC both under one key, verify).
pub(crate) fn same_secret(expected: &[u8], given: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, b"ordo secret comparison");
    let tag = hmac::sign(&key, expected);
    hmac::verify(&key, given, tag.as_ref()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> User {
        User {
            authid: "alice".into(),
            role: "".into(),
            ticket: Some("t0k".into()),
            secret: Some("s3cret".into()),
            salt: None,
            iterations: None,
            keylen: None,
            permissions: vec![
                Permission {
                    realm: "realm1".into(),
                    prefix: "com.".into(),
                    publish: true,
                    subscribe: true,
                    call: true,
                    register: false,
                },
                Permission {
                    realm: "realm1".into(),
                    prefix: "com.secret.".into(),
                    ..Default::default()
                },
            ],
        }
    }

    fn hello(authid: &str, methods: &[&str]) -> Dict {
        let mut d = Dict::new();
        d.insert("authid".into(), Value::from(authid));
        d.insert(
            "authmethods".into(),
            Value::Array(methods.iter().map(|m| Value::from(*m)).collect()),
        );
        d
    }

    #[test]
    fn ticket_and_cra() {
        let users = [alice()];
        let HelloDecision::Challenge { pending, .. } = on_hello(
            &users,
            false,
            "realm1",
            &hello("alice", &["ticket"]),
            "n",
            "t",
        ) else {
            panic!("no ticket challenge")
        };
        assert!(on_authenticate(&pending, "wrong").is_none());
        let grant = on_authenticate(&pending, "t0k");
        assert_eq!(grant.as_ref().map(|g| g.authrole.as_str()), Some("user"));
        let HelloDecision::Challenge { extra, pending, .. } = on_hello(
            &users,
            false,
            "realm1",
            &hello("alice", &["wampcra"]),
            "n",
            "t",
        ) else {
            panic!("no cra challenge")
        };
        let challenge = extra.get("challenge").and_then(Value::as_str).unwrap_or("");
        let sig = cra_signature("s3cret", challenge);
        assert!(on_authenticate(&pending, &sig).is_some());
        assert!(on_authenticate(&pending, &cra_signature("nope", challenge)).is_none());
    }

    #[test]
    fn salted_cra_signs_with_the_derived_key() {
        // PBKDF2-HMAC-SHA256("password", "salt", 1, 32), the well-known test vector
        // (Python: hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 1, 32)).
        let user = User {
            secret: Some("password".into()),
            salt: Some("salt".into()),
            iterations: Some(1),
            ..alice()
        };
        let want = [
            0x12, 0x0f, 0xb6, 0xcf, 0xfc, 0xf8, 0xb3, 0x2c, 0x43, 0xe7, 0x22, 0x52, 0x56, 0xc4,
            0xf8, 0x37, 0xa8, 0x65, 0x48, 0xc9, 0x2c, 0xcc, 0x35, 0x48, 0x08, 0x05, 0x98, 0x7c,
            0xb7, 0x0b, 0xe1, 0x7b,
        ];
        assert_eq!(user.cra_key(), Some(base64_encode(&want)));
        let users = [user];
        let HelloDecision::Challenge { extra, pending, .. } = on_hello(
            &users,
            false,
            "realm1",
            &hello("alice", &["wampcra"]),
            "n",
            "t",
        ) else {
            panic!("no cra challenge")
        };
        assert_eq!(extra.get("salt"), Some(&Value::from("salt")));
        assert_eq!(extra.get("iterations"), Some(&Value::from(1u64)));
        assert_eq!(extra.get("keylen"), Some(&Value::from(32u64)));
        let challenge = extra.get("challenge").and_then(Value::as_str).unwrap_or("");
        let key = base64_encode(&want);
        assert!(on_authenticate(&pending, &cra_signature(&key, challenge)).is_some());
        // The plain secret no longer signs.
        assert!(on_authenticate(&pending, &cra_signature("password", challenge)).is_none());
    }

    #[test]
    fn bad_salting_is_refused() {
        let with = |salt: Option<&str>, iterations, keylen| User {
            salt: salt.map(str::to_owned),
            iterations,
            keylen,
            ..alice()
        };
        assert_eq!(check_users(&[with(Some("s"), None, None)]), Ok(()));
        assert!(matches!(
            check_users(&[with(Some("s"), Some(0), None)]),
            Err(UserError::NoIterations(_))
        ));
        assert!(matches!(
            check_users(&[with(Some("s"), None, Some(0))]),
            Err(UserError::KeyLength(_))
        ));
        assert!(matches!(
            check_users(&[with(None, Some(10), None)]),
            Err(UserError::NoSalt(_))
        ));
    }

    #[test]
    fn anonymous_and_refusals() {
        let users = [alice()];
        assert!(matches!(
            on_hello(&users, true, "realm1", &Dict::new(), "n", "t"),
            HelloDecision::Welcome(Grant {
                permissions: None,
                ..
            })
        ));
        assert!(matches!(
            on_hello(&users, false, "realm1", &Dict::new(), "n", "t"),
            HelloDecision::Abort("wamp.error.no_auth_method")
        ));
        assert!(matches!(
            on_hello(
                &users,
                false,
                "realm1",
                &hello("bob", &["ticket"]),
                "n",
                "t"
            ),
            HelloDecision::Abort("wamp.error.authentication_failed")
        ));
        assert!(matches!(
            on_hello(
                &users,
                true,
                "other",
                &hello("alice", &["ticket"]),
                "n",
                "t"
            ),
            HelloDecision::Abort("wamp.error.not_authorized")
        ));
    }

    #[test]
    fn longest_prefix_decides() {
        let grant = Grant {
            authid: None,
            authrole: "user".into(),
            authmethod: "ticket",
            permissions: Some(alice().permissions),
        };
        assert!(grant.allows("realm1", "com.x", Action::Publish));
        assert!(!grant.allows("realm1", "com.x", Action::Register));
        assert!(!grant.allows("realm1", "com.secret.x", Action::Subscribe));
        assert!(!grant.allows("realm1", "org.x", Action::Call));
        assert!(!grant.allows("realm2", "com.x", Action::Publish));
    }
}
