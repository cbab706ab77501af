//! The WAMP publish options that travel with a stored message: who published
//! (when disclosed) and which subscribers may receive it.
//!
//! They are decided once, at PUBLISH, and stored with the message in the
//! ordered log, so a replay or a history read filters exactly as the live
//! delivery did.

use rmpv::Value;
use serde::{Deserialize, Serialize};

use super::message::Dict;
use super::parse::as_id;

/// A disclosed publisher (WAMP publisher identification).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publisher {
    /// The publisher's session id.
    pub session: u64,
    /// Its authentication id.
    pub authid: String,
    /// Its authentication role.
    pub authrole: String,
}

/// Subscriber black- and whitelists and publisher disclosure of one publication.
///
/// A list that is `None` does not restrict; `Some(vec![])` as a whitelist admits nobody.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishOptions {
    /// Set when the publisher asked `disclose_me`.
    pub disclose: Option<Publisher>,
    /// Sessions that must not receive the event (`exclude`).
    pub exclude: Vec<u64>,
    /// Only these sessions may receive it (`eligible`).
    pub eligible: Option<Vec<u64>>,
    /// Authids that must not receive it (`exclude_authid`).
    pub exclude_authid: Vec<String>,
    /// Only these authids may receive it (`eligible_authid`).
    pub eligible_authid: Option<Vec<String>>,
    /// Authroles that must not receive it (`exclude_authrole`).
    pub exclude_authrole: Vec<String>,
    /// Only these authroles may receive it (`eligible_authrole`).
    pub eligible_authrole: Option<Vec<String>>,
    /// fox-wamp key-value options (`when`, `watch`, `will`) and router-made
    /// records; `None` otherwise (and in records written before).
    #[serde(default)]
    pub fox: Option<FoxOptions>,
}

/// fox-wamp's key-value publish options, decided in permanent-id order by the
/// router on every node (see `ordo_router::kv`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoxOptions {
    /// Owner id of the entry whose session published it: outcomes go back there.
    pub origin: u64,
    /// The PUBLISH request to answer, when the publisher asked `acknowledge`.
    pub request: Option<u64>,
    /// Compare-and-set: apply only when the retained value fits (`when`, `watch`).
    pub when: Option<When>,
    /// Value written to the topic when the publisher's session ends (`will`).
    pub will: Option<Will>,
    /// Set on records the router's front door makes, not clients.
    pub control: Option<Control>,
}

/// A compare-and-set condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct When {
    /// The pattern the retained value must fit; `null` means no retained value.
    pub value: serde_json::Value,
    /// Park the publish until the condition holds instead of refusing it.
    pub watch: bool,
}

/// A session's last will for one topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Will {
    /// The value written (merged) when the session ends; `null` deletes.
    pub value: serde_json::Value,
}

/// What a router-made record is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// The publisher's session ended: its parked publishes are dropped. Never delivered.
    SessionEnd,
    /// The publisher's will for this topic: applied only if the session still
    /// owns the topic's will when the record is reached.
    WillOf,
    /// The delivery of a parked publish (this permanent id) that was released
    /// earlier; it changes no state, it only carries the event.
    Release {
        /// The parked publish's permanent id.
        of: u64,
    },
}

impl PublishOptions {
    /// Read the options of a PUBLISH; `None` when none of them is set.
    ///
    /// The codec has already checked the option types; a value of another type
    /// is ignored here.
    pub fn from_options(options: &Dict, publisher: Publisher) -> Option<PublishOptions> {
        let ids = |key: &str| {
            options.get(key).and_then(Value::as_array).map(|items| {
                items
                    .iter()
                    .filter_map(|v| as_id(v).ok())
                    .collect::<Vec<u64>>()
            })
        };
        let strings = |key: &str| {
            options.get(key).and_then(Value::as_array).map(|items| {
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect::<Vec<String>>()
            })
        };
        let disclose = matches!(options.get("disclose_me"), Some(Value::Boolean(true)));
        let out = PublishOptions {
            disclose: disclose.then_some(publisher),
            exclude: ids("exclude").unwrap_or_default(),
            eligible: ids("eligible"),
            exclude_authid: strings("exclude_authid").unwrap_or_default(),
            eligible_authid: strings("eligible_authid"),
            exclude_authrole: strings("exclude_authrole").unwrap_or_default(),
            eligible_authrole: strings("eligible_authrole"),
            fox: None,
        };
        (out != PublishOptions::default()).then_some(out)
    }

    /// Tell whether a subscriber session with this authid and authrole may receive the event.
    pub fn admits(&self, session: u64, authid: &str, authrole: &str) -> bool {
        let listed = |list: &Option<Vec<String>>, key: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|x| x == key))
        };
        !self.exclude.contains(&session)
            && self.eligible.as_ref().is_none_or(|l| l.contains(&session))
            && !self.exclude_authid.iter().any(|x| x == authid)
            && listed(&self.eligible_authid, authid)
            && !self.exclude_authrole.iter().any(|x| x == authrole)
            && listed(&self.eligible_authrole, authrole)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_filter_subscribers() {
        let mut options = Dict::new();
        options.insert("exclude".into(), Value::Array(vec![Value::from(2)]));
        options.insert(
            "eligible_authid".into(),
            Value::Array(vec![Value::from("alice"), Value::from("bob")]),
        );
        let p = PublishOptions::from_options(&options, Publisher::default());
        let p = p.unwrap_or_default();
        assert!(p.admits(1, "alice", "anonymous"));
        assert!(!p.admits(2, "alice", "anonymous"));
        assert!(!p.admits(3, "carol", "anonymous"));
        assert!(PublishOptions::from_options(&Dict::new(), Publisher::default()).is_none());
    }

    #[test]
    fn fox_options_round_trip_and_older_records_decode() {
        let with = PublishOptions {
            fox: Some(FoxOptions {
                origin: 2,
                request: Some(7),
                when: Some(When {
                    value: serde_json::Value::Null,
                    watch: true,
                }),
                will: Some(Will {
                    value: serde_json::json!({"a": [1, "x", null]}),
                }),
                control: Some(Control::Release { of: 9 }),
            }),
            ..Default::default()
        };
        let bytes = rmp_serde::to_vec(&with).expect("encode");
        let back: PublishOptions = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, with);
        // The seven fields written before `fox` existed.
        let old = (
            None::<Publisher>,
            Vec::<u64>::new(),
            Some(vec![3u64]),
            Vec::<String>::new(),
            None::<Vec<String>>,
            Vec::<String>::new(),
            None::<Vec<String>>,
        );
        let bytes = rmp_serde::to_vec(&old).expect("encode");
        let back: PublishOptions = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!((back.eligible, back.fox), (Some(vec![3]), None));
    }

    #[test]
    fn disclose_me_keeps_the_publisher() {
        let mut options = Dict::new();
        options.insert("disclose_me".into(), Value::Boolean(true));
        let who = Publisher {
            session: 9,
            authid: "a".into(),
            authrole: "r".into(),
        };
        let p = PublishOptions::from_options(&options, who.clone());
        assert_eq!(p.and_then(|p| p.disclose), Some(who));
    }
}
