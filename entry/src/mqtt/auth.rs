//! MQTT CONNECT username/password against the `users` section WAMP uses, and
//! the same per-realm, per-prefix permissions on PUBLISH and SUBSCRIBE.
//!
//! ```text
//!  CONNECT(username, password, will) ─► on_connect ─┬─ Ok(Grant)          CONNACK 0
//!                                                   └─ Err(0x86 | 0x87)   CONNACK 0x86/0x87 (v5), 4/5 (3.1.1)
//!  PUBLISH topic a/b ─► may_publish    ─► Grant::allows(mqtt_realm, "a.b", Publish)
//!  SUBSCRIBE a/+/#   ─► may_subscribe  ─► Grant::allows(mqtt_realm, "a.+.#", Subscribe)
//! ```
//!
//! The username is the user's `authid` and the password its `ticket` (the
//! plain secret of WAMP ticket authentication; the WAMP-CRA `secret` is not
//! accepted, so a user without a ticket cannot log in over MQTT). Topics meet
//! permission prefixes in WAMP form (`ordo_common::topic`: `/` is `.`), in
//! the realm MQTT clients share (`mqtt_realm`). A filter is checked as written,
//! wildcards included, like a WAMP pattern subscription; deliveries are checked
//! per topic too, so a wildcard never reaches a topic the user may not subscribe to.
//! Sans-IO: no clock, no socket.

use crate::wamp::auth::{role, same_secret, Action, Grant, User};
use ordo_common::mqtt::ReasonCode;
use ordo_common::topic::to_wamp_uri;

/// What a CONNECT brings to be checked.
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    /// User Name.
    pub username: Option<&'a str>,
    /// Password (binary in MQTT).
    pub password: Option<&'a [u8]>,
    /// The will's topic, which the user must be allowed to publish on.
    pub will_topic: Option<&'a str>,
}

/// Decide a CONNECT: the grant, or the CONNACK reason code to refuse with
/// (0x86 bad user name or password, 0x87 not authorized; 3.1.1 clients get 4 and 5).
///
/// With no users configured and `allow_anonymous`, every CONNECT is let in and
/// the username is not checked, as before users applied to MQTT. Once users are
/// configured, a username is a claim: unknown or with a wrong password, it is refused.
pub fn on_connect(
    users: &[User],
    allow_anonymous: bool,
    realm: &str,
    credentials: Credentials<'_>,
) -> Result<Grant, ReasonCode> {
    let anonymous = || Grant {
        authid: credentials.username.map(str::to_owned),
        authrole: "anonymous".into(),
        authmethod: "anonymous",
        permissions: None,
    };
    let Some(username) = credentials.username else {
        return match allow_anonymous {
            true => Ok(anonymous()),
            false => Err(ReasonCode::NOT_AUTHORIZED),
        };
    };
    let Some(user) = users.iter().find(|u| u.authid == username) else {
        return match users.is_empty() && allow_anonymous {
            true => Ok(anonymous()),
            false => Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        };
    };
    let password_ok = match (user.ticket.as_deref(), credentials.password) {
        (Some(ticket), Some(given)) => same_secret(ticket.as_bytes(), given),
        _ => false,
    };
    if !password_ok {
        return Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    }
    let grant = Grant {
        authid: Some(user.authid.clone()),
        authrole: role(user).to_owned(),
        authmethod: "ticket",
        permissions: Some(user.permissions.clone()),
    };
    let joins_realm = user
        .permissions
        .iter()
        .any(|p| p.realm == realm || p.realm == "*");
    let will_ok = credentials
        .will_topic
        .is_none_or(|t| may_publish(&grant, realm, t));
    match joins_realm && will_ok {
        true => Ok(grant),
        false => Err(ReasonCode::NOT_AUTHORIZED),
    }
}

/// Tell whether `grant` may publish on MQTT `topic` in `realm`.
pub fn may_publish(grant: &Grant, realm: &str, topic: &str) -> bool {
    grant.permissions.is_none() || grant.allows(realm, &to_wamp_uri(topic), Action::Publish)
}

/// Tell whether `grant` may subscribe to MQTT `filter` (or receive a message on that topic).
pub fn may_subscribe(grant: &Grant, realm: &str, filter: &str) -> bool {
    grant.permissions.is_none() || grant.allows(realm, &to_wamp_uri(filter), Action::Subscribe)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wamp::auth::Permission;

    fn users() -> Vec<User> {
        vec![
            User {
                authid: "alice".into(),
                ticket: Some("t0k".into()),
                permissions: vec![
                    Permission {
                        realm: "realm1".into(),
                        prefix: "com.".into(),
                        publish: true,
                        subscribe: true,
                        ..Permission::default()
                    },
                    Permission {
                        realm: "realm1".into(),
                        prefix: "com.ro.".into(),
                        subscribe: true,
                        ..Permission::default()
                    },
                ],
                ..User::default()
            },
            User {
                authid: "cra-only".into(),
                secret: Some("s3cret".into()),
                permissions: vec![Permission {
                    realm: "*".into(),
                    publish: true,
                    ..Permission::default()
                }],
                ..User::default()
            },
        ]
    }

    fn creds<'a>(user: Option<&'a str>, password: Option<&'a str>) -> Credentials<'a> {
        Credentials {
            username: user,
            password: password.map(str::as_bytes),
            will_topic: None,
        }
    }

    #[test]
    fn passwords_and_anonymous() {
        let users = users();
        let grant = on_connect(&users, false, "realm1", creds(Some("alice"), Some("t0k")));
        assert_eq!(grant.as_ref().map(|g| g.authmethod), Ok("ticket"));
        for (user, password) in [
            (Some("alice"), Some("wrong")),
            (Some("alice"), None),
            (Some("bob"), Some("t0k")),
            (Some("cra-only"), Some("s3cret")),
        ] {
            assert_eq!(
                on_connect(&users, true, "realm1", creds(user, password)).err(),
                Some(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
                "{user:?} {password:?}"
            );
        }
        assert_eq!(
            on_connect(&users, false, "realm1", creds(None, None)).err(),
            Some(ReasonCode::NOT_AUTHORIZED)
        );
        assert!(on_connect(&users, true, "realm1", creds(None, None)).is_ok());
        // No users and anonymous allowed: any username gets in, unchecked.
        assert!(on_connect(&[], true, "realm1", creds(Some("bob"), Some("x"))).is_ok());
        // No permission in the realm MQTT uses.
        assert_eq!(
            on_connect(&users, false, "other", creds(Some("alice"), Some("t0k"))).err(),
            Some(ReasonCode::NOT_AUTHORIZED)
        );
    }

    #[test]
    fn will_topic_needs_publish() {
        let users = users();
        let with_will = |topic| Credentials {
            will_topic: Some(topic),
            ..creds(Some("alice"), Some("t0k"))
        };
        assert!(on_connect(&users, false, "realm1", with_will("com/w")).is_ok());
        assert_eq!(
            on_connect(&users, false, "realm1", with_will("com/ro/w")).err(),
            Some(ReasonCode::NOT_AUTHORIZED)
        );
    }

    #[test]
    fn topics_map_to_uri_prefixes() {
        let users = users();
        let Ok(grant) = on_connect(&users, false, "realm1", creds(Some("alice"), Some("t0k")))
        else {
            panic!("alice refused")
        };
        assert!(may_publish(&grant, "realm1", "com/x"));
        assert!(!may_publish(&grant, "realm1", "com/ro/x"));
        assert!(!may_publish(&grant, "realm1", "org/x"));
        assert!(may_subscribe(&grant, "realm1", "com/ro/#"));
        assert!(may_subscribe(&grant, "realm1", "com/+/x"));
        assert!(!may_subscribe(&grant, "realm1", "#"));
        let anonymous = on_connect(&[], true, "realm1", creds(None, None));
        assert!(anonymous.is_ok_and(|g| may_publish(&g, "realm1", "any/thing")));
    }
}
