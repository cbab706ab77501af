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

use ordo_common::wamp::{value::base64_encode, Dict, Value};
use ring::hmac;
use serde::{Deserialize, Serialize};

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
pub fn on_authenticate(pending: &Pending, signature: &str) -> Option<Grant> {
    let ok = match pending.method {
        "ticket" => pending
            .user
            .ticket
            .as_deref()
            .is_some_and(|t| same_secret(t.as_bytes(), signature.as_bytes())),
        "wampcra" => pending.user.secret.as_deref().is_some_and(|secret| {
            same_secret(
                cra_signature(secret, &pending.challenge).as_bytes(),
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

/// Return the WAMP-CRA signature of a challenge: base64(HMAC-SHA256(secret, challenge)).
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
