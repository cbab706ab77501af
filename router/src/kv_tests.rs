use super::*;
use bytes::Bytes;
use ordo_common::wamp::{PublishOptions, Will};
use serde_json::json;

const ORIGIN: u64 = 1;

fn wamp(session: u64, topic: &str, value: Json) -> StoredMessage {
    let args = if value.is_null() {
        Vec::new()
    } else {
        vec![from_json(value)]
    };
    StoredMessage {
        realm: "realm1".into(),
        topic: topic.into(),
        payload: Payload::Wamp {
            args,
            kwargs: Default::default(),
        },
        qos: 1,
        retain: true,
        publisher: session,
        exclude_publisher: true,
        mqtt: None,
        wamp: None,
    }
}

fn with_fox(mut m: StoredMessage, fox: FoxOptions) -> StoredMessage {
    m.wamp = Some(PublishOptions {
        fox: Some(FoxOptions {
            origin: ORIGIN,
            request: Some(m.publisher * 100),
            ..fox
        }),
        ..Default::default()
    });
    m
}

fn when(m: StoredMessage, value: Json, watch: bool) -> StoredMessage {
    with_fox(
        m,
        FoxOptions {
            when: Some(When { value, watch }),
            ..Default::default()
        },
    )
}

fn lock(session: u64) -> StoredMessage {
    let m = when(
        wamp(session, "lock", json!({"owner": session})),
        Json::Null,
        true,
    );
    let mut m = m;
    if let Some(f) = m.wamp.as_mut().and_then(|o| o.fox.as_mut()) {
        f.will = Some(Will { value: Json::Null });
    }
    m
}

fn control(session: u64, topic: &str, control: Control) -> StoredMessage {
    with_fox(
        wamp(session, topic, Json::Null),
        FoxOptions {
            control: Some(control),
            ..Default::default()
        },
    )
}

struct Log {
    kv: KvState,
    retained: Retained,
    next: u64,
}

impl Log {
    fn new() -> Log {
        Log {
            kv: KvState::default(),
            retained: Retained::new(),
            next: 0,
        }
    }

    fn apply(&mut self, m: StoredMessage) -> (PermanentId, Applied) {
        self.next += 1;
        let id = PermanentId(self.next);
        (id, self.kv.apply(&mut self.retained, id, &Arc::new(m)))
    }

    fn value(&self, topic: &str) -> Json {
        current(&self.retained, &("realm1".into(), topic.into()))
    }
}

fn kinds(applied: &Applied) -> Vec<(u64, &'static str, u64)> {
    applied
        .outcomes
        .iter()
        .map(|(s, o)| match o {
            Outcome::Applied { id, .. } => (*s, "applied", id.0),
            Outcome::Refused { id, .. } => (*s, "refused", id.0),
            Outcome::Released { id, .. } => (*s, "released", id.0),
        })
        .collect()
}

#[test]
fn fits_follows_fox_wamp() {
    assert!(fits(&Json::Null, &Json::Null));
    assert!(!fits(&Json::Null, &json!({})));
    assert!(!fits(&json!({"a": 1}), &Json::Null));
    assert!(fits(&json!({"a": 1}), &json!({"a": 1.0, "b": 2})));
    assert!(!fits(&json!({"a": 1}), &json!({"b": 1})));
    assert!(fits(
        &json!({"a": {"b": "x"}}),
        &json!({"a": {"b": "x", "c": 1}})
    ));
    assert!(!fits(&json!({"a": null}), &json!({"b": 1})));
    assert!(fits(&json!({"a": null}), &json!({"a": null})));
    assert!(fits(&json!("on"), &json!("on")));
    assert!(!fits(&json!("on"), &json!("off")));
    assert!(!fits(&json!({"a": 1}), &json!("a")));
}

#[test]
fn merge_is_recursive_and_replaces_non_objects() {
    let old = json!({"a": 1, "b": {"c": 1, "d": 2}, "e": {"f": 1}});
    let new = json!({"b": {"c": 3}, "e": 5, "g": [1]});
    assert_eq!(
        merge(&old, &new),
        json!({"a": 1, "b": {"c": 3, "d": 2}, "e": 5, "g": [1]})
    );
    assert_eq!(merge(&json!("x"), &json!({"a": 1})), json!({"a": 1}));
}

#[test]
fn wamp_retain_merges_mqtt_retain_replaces_empty_deletes() {
    let mut log = Log::new();
    log.apply(wamp(1, "k", json!({"a": 1, "n": {"x": 1}})));
    log.apply(wamp(1, "k", json!({"b": 2, "n": {"y": 2}})));
    assert_eq!(
        log.value("k"),
        json!({"a": 1, "b": 2, "n": {"x": 1, "y": 2}})
    );
    let mut mqtt = wamp(1, "k", Json::Null);
    mqtt.payload = Payload::Raw(Bytes::from_static(b"{\"c\":3}"));
    log.apply(mqtt);
    assert_eq!(log.value("k"), json!({"c": 3}));
    log.apply(wamp(1, "k", json!("scalar")));
    assert_eq!(log.value("k"), json!("scalar"));
    log.apply(wamp(1, "k", Json::Null));
    assert_eq!(log.value("k"), Json::Null);
    assert!(log.retained.is_empty());
}

#[test]
fn compare_and_set_applies_or_refuses() {
    let mut log = Log::new();
    // `null`: only when the topic has no retained value.
    let (id, a) = log.apply(when(wamp(1, "k", json!({"v": 1})), Json::Null, false));
    assert!(a.deliver);
    assert_eq!(kinds(&a), vec![(1, "applied", id.0)]);
    let (id, a) = log.apply(when(wamp(2, "k", json!({"v": 9})), Json::Null, false));
    assert!(!a.deliver);
    assert_eq!(kinds(&a), vec![(2, "refused", id.0)]);
    assert!(!log.kv.replayable(id, &wamp(2, "k", Json::Null)));
    assert_eq!(log.value("k"), json!({"v": 1}));
    let (_, a) = log.apply(when(wamp(2, "k", json!({"v": 2})), json!({"v": 1}), false));
    assert!(a.deliver);
    assert_eq!(log.value("k"), json!({"v": 2}));
    let (_, a) = log.apply(when(wamp(2, "k", json!({"v": 3})), json!({"v": 1}), false));
    assert!(!a.deliver);
    assert_eq!(log.value("k"), json!({"v": 2}));
}

#[test]
fn parked_publishes_are_released_in_id_order_one_at_a_time() {
    let mut log = Log::new();
    let (_, a) = log.apply(lock(1));
    assert_eq!(kinds(&a), vec![(1, "applied", 1)]);
    let (b, a) = log.apply(lock(2));
    assert!(!a.deliver && a.outcomes.is_empty());
    let (c, a) = log.apply(lock(3));
    assert!(!a.deliver && a.outcomes.is_empty());
    assert_eq!(log.kv.parked_count(), 2);
    // Something else on the topic that keeps it locked releases nobody.
    let (_, a) = log.apply(wamp(1, "lock", json!({"note": "x"})));
    assert!(a.outcomes.is_empty());
    // Unlock: the oldest waiter (2) gets it at the unlock's id, 3 keeps waiting.
    let (unlock, a) = log.apply(wamp(1, "lock", Json::Null));
    assert!(a.deliver);
    assert_eq!(kinds(&a), vec![(2, "released", b.0)]);
    match &a.outcomes[0].1 {
        Outcome::Released { at, request, .. } => {
            assert_eq!((*at, *request), (unlock, Some(200)));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(log.value("lock"), json!({"owner": 2}));
    assert!(!log.kv.replayable(b, &lock(2)));
    let (_, a) = log.apply(wamp(2, "lock", Json::Null));
    assert_eq!(kinds(&a), vec![(3, "released", c.0)]);
    assert_eq!(log.kv.parked_count(), 0);
}

#[test]
fn session_end_drops_its_parked_publishes_and_wills_guard_ownership() {
    let mut log = Log::new();
    log.apply(lock(1));
    log.apply(lock(2));
    log.apply(lock(3));
    // Session 2 ends while waiting: it is never released.
    let (end, a) = log.apply(control(2, "$ordo/session_end", Control::SessionEnd));
    assert!(!a.deliver);
    assert!(!log
        .kv
        .replayable(end, &control(2, "x", Control::SessionEnd)));
    assert_eq!(log.kv.parked_count(), 1);
    // Session 1 ends: its will on `lock` (null) frees the lock for 3.
    log.apply(control(1, "$ordo/session_end", Control::SessionEnd));
    let wills = log.kv.wills_of(ORIGIN, 1);
    assert_eq!(wills, vec![("realm1".into(), "lock".into(), Json::Null)]);
    assert!(log.kv.wills_of(ORIGIN + 1, 1).is_empty());
    let (_, a) = log.apply(control(1, "lock", Control::WillOf));
    assert!(a.deliver);
    assert_eq!(kinds(&a), vec![(3, "released", 3)]);
    assert_eq!(log.value("lock"), json!({"owner": 3}));
    // A stale will (the topic changed hands) does nothing.
    let (stale, a) = log.apply(control(1, "lock", Control::WillOf));
    assert!(!a.deliver);
    assert!(!log
        .kv
        .replayable(stale, &control(1, "lock", Control::WillOf)));
    assert_eq!(log.value("lock"), json!({"owner": 3}));
}

#[test]
fn a_will_value_is_merged_and_a_release_record_changes_nothing() {
    let mut log = Log::new();
    let mut m = wamp(1, "presence", json!({"state": "on", "name": "a"}));
    m = with_fox(
        m,
        FoxOptions {
            will: Some(Will {
                value: json!({"state": "off"}),
            }),
            ..Default::default()
        },
    );
    log.apply(m);
    let (_, a) = log.apply(control(1, "presence", Control::Release { of: 1 }));
    assert!(a.deliver);
    assert_eq!(log.value("presence"), json!({"state": "on", "name": "a"}));
    let mut will = control(1, "presence", Control::WillOf);
    will.payload = Payload::Wamp {
        args: vec![from_json(json!({"state": "off"}))],
        kwargs: Default::default(),
    };
    log.apply(will);
    assert_eq!(log.value("presence"), json!({"state": "off", "name": "a"}));
    assert!(log.kv.wills_of(ORIGIN, 1).is_empty());
}

#[test]
fn value_of_reads_both_protocols() {
    assert_eq!(value_of(&wamp(1, "t", json!(5)).payload), json!(5));
    assert_eq!(value_of(&wamp(1, "t", Json::Null).payload), Json::Null);
    assert_eq!(
        value_of(&Payload::Raw(Bytes::from_static(b"[1,2]"))),
        json!([1, 2])
    );
    assert_eq!(value_of(&Payload::Raw(Bytes::new())), Json::Null);
    let kw = Payload::Wamp {
        args: Vec::new(),
        kwargs: [("a".to_owned(), Value::from(1))].into_iter().collect(),
    };
    assert_eq!(value_of(&kw), json!({"a": 1}));
}

#[test]
fn the_router_withholds_refused_events_and_reports_outcomes() {
    let router = crate::Router::new(PermanentId(0), Vec::new(), 16, 1);
    let (publisher, _own) = router.open_session();
    let (subscriber, mut events) = router.open_session();
    let mut outcomes = router.outcomes(publisher);
    let spec = crate::SubscriptionSpec {
        realm: "realm1".into(),
        filter: ordo_common::topic::Filter::mqtt("k"),
        qos: 0,
        exclude_own: false,
    };
    router.subscribe(subscriber, vec![spec]);
    let first = when(wamp(publisher, "k", json!(1)), Json::Null, false);
    let second = when(wamp(publisher, "k", json!(2)), Json::Null, false);
    router.dispatch(&[
        (PermanentId(1), Arc::new(first)),
        (PermanentId(2), Arc::new(second)),
    ]);
    assert_eq!(events.try_recv().map(|d| d.id).ok(), Some(PermanentId(1)));
    assert!(events.try_recv().is_err());
    let got: Vec<Outcome> = std::iter::from_fn(|| outcomes.try_recv().ok()).collect();
    assert_eq!(
        got,
        vec![
            Outcome::Applied {
                origin: ORIGIN,
                request: Some(publisher * 100),
                id: PermanentId(1)
            },
            Outcome::Refused {
                origin: ORIGIN,
                request: Some(publisher * 100),
                id: PermanentId(2)
            },
        ]
    );
    assert_eq!(router.last_dispatched(), PermanentId(2));
}
