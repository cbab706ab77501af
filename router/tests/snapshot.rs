//! A router restored from a snapshot taken at id `k`, then given the messages after `k`, ends
//! in the state of a router given the whole log: retained values (MQTT replace, WAMP
//! deep merge, empty deletes, `$ordo` session records), parked `watch` publishes, wills,
//! session ends and which ids replay shows. Checked over random logs (proptest), with the
//! snapshot encoded and decoded on the way, as it is on disk.

use bytes::Bytes;
use ordo_common::wamp::value::from_json;
use ordo_common::wamp::{Control, FoxOptions, PublishOptions, When, Will};
use ordo_common::{Payload, PermanentId, StoredMessage};
use ordo_router::{Outcome, Router, RouterSnapshot, SnapshotDecodeError};
use proptest::prelude::*;
use serde_json::{json, Value as Json};
use std::sync::Arc;

const ORIGIN: u64 = 7;
const TOPICS: [&str; 3] = ["a", "b", "lock"];

/// One step of a random log; small alphabets so steps interact.
#[derive(Clone, Debug)]
enum Step {
    /// MQTT retained publish of `{"v": n}`, or an empty (deleting) one when `None`.
    MqttRetain(usize, Option<u8>),
    /// WAMP retained publish of an object with one member: deep-merged.
    WampRetain(usize, u8, u8),
    /// A publish that retains nothing.
    Plain(usize),
    /// fox-wamp `when` (`None`: the topic must be empty), maybe `watch`, maybe with a will.
    When {
        session: u64,
        topic: usize,
        when: Option<u8>,
        value: u8,
        watch: bool,
        will: bool,
    },
    SessionEnd(u64),
    WillOf(u64, usize),
    Release(u64, usize),
    /// An MQTT persistent-session record (retained in `$ordo`), or its deletion.
    Session(u8, bool),
}

fn step() -> impl Strategy<Value = Step> {
    let topic = 0..TOPICS.len();
    let session = 1u64..4;
    prop_oneof![
        (topic.clone(), proptest::option::of(0u8..3)).prop_map(|(t, v)| Step::MqttRetain(t, v)),
        (topic.clone(), 0u8..3, 0u8..3).prop_map(|(t, k, v)| Step::WampRetain(t, k, v)),
        topic.clone().prop_map(Step::Plain),
        (
            session.clone(),
            topic.clone(),
            proptest::option::of(0u8..3),
            0u8..3,
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(session, topic, when, value, watch, will)| Step::When {
                session,
                topic,
                when,
                value,
                watch,
                will
            }),
        session.clone().prop_map(Step::SessionEnd),
        (session.clone(), topic.clone()).prop_map(|(s, t)| Step::WillOf(s, t)),
        (session, topic).prop_map(|(s, t)| Step::Release(s, t)),
        (0u8..3, any::<bool>()).prop_map(|(c, keep)| Step::Session(c, keep)),
    ]
}

fn base(realm: &str, topic: &str, publisher: u64, payload: Payload) -> StoredMessage {
    StoredMessage {
        realm: realm.into(),
        topic: topic.into(),
        payload,
        qos: 1,
        retain: true,
        publisher,
        exclude_publisher: false,
        mqtt: None,
        wamp: None,
    }
}

fn wamp_value(value: Json) -> Payload {
    Payload::Wamp {
        args: if value.is_null() {
            Vec::new()
        } else {
            vec![from_json(value)]
        },
        kwargs: Default::default(),
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

fn control(session: u64, topic: usize, control: Control) -> StoredMessage {
    with_fox(
        base("realm1", TOPICS[topic], session, wamp_value(Json::Null)),
        FoxOptions {
            control: Some(control),
            ..Default::default()
        },
    )
}

fn message(step: &Step) -> StoredMessage {
    match *step {
        Step::MqttRetain(t, v) => {
            let body = v.map_or_else(Bytes::new, |v| Bytes::from(format!("{{\"v\":{v}}}")));
            base("realm1", TOPICS[t], 0, Payload::Raw(body))
        }
        Step::WampRetain(t, k, v) => base(
            "realm1",
            TOPICS[t],
            1,
            wamp_value(json!({ format!("k{k}"): { "n": v } })),
        ),
        Step::Plain(t) => StoredMessage {
            retain: false,
            ..base("realm1", TOPICS[t], 1, wamp_value(json!(1)))
        },
        Step::When {
            session,
            topic,
            when,
            value,
            watch,
            will,
        } => with_fox(
            base(
                "realm1",
                TOPICS[topic],
                session,
                wamp_value(json!({ "v": value })),
            ),
            FoxOptions {
                when: Some(When {
                    value: when.map_or(Json::Null, |w| json!({ "v": w })),
                    watch,
                }),
                will: will.then_some(Will { value: Json::Null }),
                ..Default::default()
            },
        ),
        Step::SessionEnd(s) => control(s, 0, Control::SessionEnd),
        Step::WillOf(s, t) => control(s, t, Control::WillOf),
        Step::Release(s, t) => control(s, t, Control::Release { of: s }),
        Step::Session(client, keep) => {
            let body = if keep {
                Bytes::from(vec![1, client])
            } else {
                Bytes::new()
            };
            base(
                "$ordo",
                &format!("mqtt/session/c{client}"),
                0,
                Payload::Raw(body),
            )
        }
    }
}

fn log_of(steps: &[Step]) -> Vec<(PermanentId, Arc<StoredMessage>)> {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| (PermanentId(i as u64 + 1), Arc::new(message(s))))
        .collect()
}

/// Dispatch `batch` in chunks of `chunk`, collecting the outcomes sessions 1..4 are sent.
fn dispatch(
    router: &Router,
    batch: &[(PermanentId, Arc<StoredMessage>)],
    chunk: usize,
) -> Vec<Outcome> {
    let mut receivers: Vec<_> = (1..4).map(|s| router.outcomes(s)).collect();
    for part in batch.chunks(chunk.max(1)) {
        router.dispatch(part);
    }
    let mut out = Vec::new();
    for rx in &mut receivers {
        out.extend(std::iter::from_fn(|| rx.try_recv().ok()));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn restore_then_the_rest_equals_the_whole_log(
        steps in proptest::collection::vec(step(), 0..60),
        cut in any::<proptest::sample::Index>(),
        chunk in 1usize..8,
    ) {
        let log = log_of(&steps);
        let k = cut.index(log.len() + 1);

        let whole = Router::new(PermanentId::ZERO, Vec::new(), 16, 1);
        dispatch(&whole, &log[..k], chunk);
        let snapshot = whole.snapshot();
        prop_assert_eq!(snapshot.at(), PermanentId(k as u64));
        let tail_whole = dispatch(&whole, &log[k..], chunk);

        let bytes = snapshot.encode();
        let decoded = RouterSnapshot::decode(&bytes).expect("decode");
        prop_assert_eq!(&decoded, &snapshot);
        let restored = Router::restore(decoded, 16, 1);
        prop_assert_eq!(restored.last_dispatched(), PermanentId(k as u64));
        let tail_restored = dispatch(&restored, &log[k..], chunk);

        prop_assert_eq!(restored.snapshot(), whole.snapshot());
        prop_assert_eq!(tail_restored, tail_whole, "outcomes after the cut differ");
        for (id, m) in &log {
            prop_assert_eq!(restored.replayable(*id, m), whole.replayable(*id, m), "id {}", id.0);
        }
        for s in 1..4 {
            prop_assert_eq!(restored.wills_of(ORIGIN, s), whole.wills_of(ORIGIN, s));
        }
        prop_assert_eq!(restored.fox_sessions_of(ORIGIN), whole.fox_sessions_of(ORIGIN));
        prop_assert_eq!(
            restored.retained_under("$ordo", "mqtt/session/"),
            whole.retained_under("$ordo", "mqtt/session/")
        );
    }
}

#[test]
fn the_generator_reaches_every_kind_of_state() {
    // Guards the property above against a generator that never parks, wills or merges.
    let steps = [
        Step::When {
            session: 1,
            topic: 2,
            when: None,
            value: 1,
            watch: true,
            will: true,
        },
        Step::When {
            session: 2,
            topic: 2,
            when: None,
            value: 2,
            watch: true,
            will: false,
        },
        Step::WampRetain(0, 0, 1),
        Step::WampRetain(0, 1, 2),
        Step::Session(1, true),
        Step::When {
            session: 3,
            topic: 1,
            when: Some(2),
            value: 0,
            watch: false,
            will: false,
        },
    ];
    let router = Router::new(PermanentId::ZERO, Vec::new(), 16, 1);
    router.dispatch(&log_of(&steps));
    let snapshot = Router::restore(
        RouterSnapshot::decode(&router.snapshot().encode()).expect("decode"),
        16,
        1,
    )
    .snapshot();
    assert_eq!(snapshot.parked_count(), 1);
    assert_eq!(snapshot.retained_count(), 3, "lock, a, the session record");
    let (_, merged) = router.retained_of("realm1", "a").expect("a retained");
    assert_eq!(
        ordo_router::kv::value_of(&merged.payload),
        json!({"k0": {"n": 1}, "k1": {"n": 2}})
    );
    assert_eq!(
        router.wills_of(ORIGIN, 1),
        vec![("realm1".into(), "lock".into(), Json::Null)]
    );
    // Refused (id 6) and parked (id 2) publishes stay out of replay after a restore.
    let restored = Router::restore(router.snapshot(), 16, 1);
    let log = log_of(&steps);
    assert!(!restored.replayable(log[1].0, &log[1].1));
    assert!(!restored.replayable(log[5].0, &log[5].1));
    assert!(restored.replayable(log[0].0, &log[0].1));
}

#[test]
fn bad_bytes_are_named_not_restored() {
    let router = Router::new(PermanentId::ZERO, Vec::new(), 16, 1);
    router.dispatch(&log_of(&[Step::MqttRetain(0, Some(1))]));
    let mut bytes = router.snapshot().encode();
    assert_eq!(RouterSnapshot::decode(&[]), Err(SnapshotDecodeError::Empty));
    bytes[0] = 99;
    assert_eq!(
        RouterSnapshot::decode(&bytes),
        Err(SnapshotDecodeError::UnknownFormat(99))
    );
    bytes[0] = ordo_router::snapshot::SNAPSHOT_FORMAT;
    bytes.truncate(bytes.len() / 2);
    assert!(matches!(
        RouterSnapshot::decode(&bytes),
        Err(SnapshotDecodeError::Corrupt(_))
    ));
}
