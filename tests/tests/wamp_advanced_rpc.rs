//! The WAMP Advanced profile's dealer: progressive results, cancelling,
//! timeouts, shared and pattern-based registrations, caller identification
//! and the registration meta API, over WebSocket and RawSocket.

use anyhow::{bail, ensure, Context};
use ordo_common::wamp::{code, value_to_dict, Dict, Message, Serializer, Value};
use ordo_tests::wamp_client::{dict, WampClient, REALM};
use ordo_tests::TestNode;
use std::time::Duration;

type Result = anyhow::Result<()>;

const QUIET: Duration = Duration::from_millis(200);

async fn register(c: &mut WampClient, procedure: &str, options: Dict) -> anyhow::Result<u64> {
    let request = c.request_id();
    c.send(&Message::Register {
        request,
        options,
        procedure: procedure.into(),
    })
    .await?;
    match c.reply_to(request).await? {
        Message::Registered { registration, .. } => Ok(registration),
        other => bail!("expected REGISTERED, got {other:?}"),
    }
}

/// Send a CALL; return its request id.
async fn call(
    c: &mut WampClient,
    procedure: &str,
    options: Dict,
    args: Vec<Value>,
) -> anyhow::Result<u64> {
    let request = c.request_id();
    c.send(&Message::Call {
        request,
        options,
        procedure: procedure.into(),
        args,
        kwargs: Dict::new(),
    })
    .await?;
    Ok(request)
}

/// The next INVOCATION: (request, registration, details, args).
async fn invocation(c: &mut WampClient) -> anyhow::Result<(u64, u64, Dict, Vec<Value>)> {
    match c
        .recv_matching(|m| matches!(m, Message::Invocation { .. }))
        .await?
    {
        Message::Invocation {
            request,
            registration,
            details,
            args,
            ..
        } => Ok((request, registration, details, args)),
        other => bail!("expected INVOCATION, got {other:?}"),
    }
}

async fn yield_(c: &mut WampClient, request: u64, progress: bool, args: Vec<Value>) -> Result {
    let options = if progress {
        dict([("progress", Value::Boolean(true))])
    } else {
        Dict::new()
    };
    c.send(&Message::Yield {
        request,
        options,
        args,
        kwargs: Dict::new(),
    })
    .await
}

/// The reply to `request` (RESULT or ERROR), unwrapped.
async fn reply(c: &mut WampClient, request: u64) -> anyhow::Result<Message> {
    c.recv_matching(|m| match m {
        Message::Result { request: r, .. } => *r == request,
        Message::Error {
            request: r,
            request_type,
            ..
        } => *r == request && *request_type == code::CALL,
        _ => false,
    })
    .await
}

/// Call a meta procedure and return its RESULT args.
async fn meta(c: &mut WampClient, procedure: &str, args: Vec<Value>) -> anyhow::Result<Vec<Value>> {
    let r = call(c, procedure, Dict::new(), args).await?;
    match reply(c, r).await? {
        Message::Result { args, .. } => Ok(args),
        other => bail!("{procedure}: {other:?}"),
    }
}

fn error_uri(m: &Message) -> Option<&str> {
    match m {
        Message::Error { error, .. } => Some(error),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progressive_results_and_caller_identification() -> Result {
    let node = TestNode::start().await?;
    let mut callee =
        WampClient::join_rawsocket(node.wamp_rawsocket, Serializer::Cbor, REALM).await?;
    register(&mut callee, "rpc.progress", Dict::new()).await?;
    register(
        &mut callee,
        "rpc.disclose",
        dict([("disclose_caller", Value::Boolean(true))]),
    )
    .await?;
    let mut caller = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    let r = call(
        &mut caller,
        "rpc.progress",
        dict([("receive_progress", Value::Boolean(true))]),
        vec![],
    )
    .await?;
    let (inv, _, details, _) = invocation(&mut callee).await?;
    assert_eq!(details.get("receive_progress"), Some(&Value::Boolean(true)));
    assert!(!details.contains_key("caller"), "not disclosed");
    for i in 0..3u64 {
        yield_(&mut callee, inv, true, vec![Value::from(i)]).await?;
    }
    yield_(&mut callee, inv, false, vec![Value::from("done")]).await?;
    for i in 0..3u64 {
        match reply(&mut caller, r).await? {
            Message::Result { details, args, .. } => {
                assert_eq!(details.get("progress"), Some(&Value::Boolean(true)));
                assert_eq!(args, vec![Value::from(i)]);
            }
            other => bail!("{other:?}"),
        }
    }
    let last = reply(&mut caller, r).await?;
    ensure!(
        matches!(&last, Message::Result { details, .. } if details.is_empty()),
        "{last:?}"
    );
    // Progress the caller did not ask for is dropped; the final result arrives.
    let r = call(&mut caller, "rpc.progress", Dict::new(), vec![]).await?;
    let (inv, _, _, _) = invocation(&mut callee).await?;
    yield_(&mut callee, inv, true, vec![Value::from("p")]).await?;
    yield_(&mut callee, inv, false, vec![Value::from("final")]).await?;
    ensure!(
        matches!(reply(&mut caller, r).await?, Message::Result { args, .. } if args == vec![Value::from("final")])
    );
    // Caller identification: by the registration, or by the caller's disclose_me.
    for (procedure, options) in [
        ("rpc.disclose", Dict::new()),
        (
            "rpc.progress",
            dict([("disclose_me", Value::Boolean(true))]),
        ),
    ] {
        let r = call(&mut caller, procedure, options, vec![]).await?;
        let (inv, _, details, _) = invocation(&mut callee).await?;
        assert_eq!(
            details.get("caller"),
            Some(&Value::from(caller.session)),
            "{procedure}"
        );
        assert!(details.contains_key("caller_authid"));
        yield_(&mut callee, inv, false, vec![]).await?;
        reply(&mut caller, r).await?;
    }
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_modes_and_timeout() -> Result {
    let node = TestNode::start().await?;
    let mut callee = WampClient::join(node.wamp, Serializer::MsgPack, REALM).await?;
    register(&mut callee, "rpc.slow", Dict::new()).await?;
    let mut caller = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    // skip: the caller gets canceled at once, the callee hears nothing.
    let r = call(&mut caller, "rpc.slow", Dict::new(), vec![]).await?;
    let (skipped, _, _, _) = invocation(&mut callee).await?;
    caller
        .send(&Message::Cancel {
            request: r,
            options: dict([("mode", Value::from("skip"))]),
        })
        .await?;
    assert_eq!(
        error_uri(&reply(&mut caller, r).await?),
        Some("wamp.error.canceled")
    );
    yield_(&mut callee, skipped, false, vec![]).await?; // late: dropped
                                                        // killnowait: canceled at once, INTERRUPT to the callee.
    let r = call(&mut caller, "rpc.slow", Dict::new(), vec![]).await?;
    let (inv, _, _, _) = invocation(&mut callee).await?;
    caller
        .send(&Message::Cancel {
            request: r,
            options: dict([("mode", Value::from("killnowait"))]),
        })
        .await?;
    assert_eq!(
        error_uri(&reply(&mut caller, r).await?),
        Some("wamp.error.canceled")
    );
    let int = callee
        .recv_matching(|m| matches!(m, Message::Interrupt { .. }))
        .await?;
    ensure!(matches!(int, Message::Interrupt { request, .. } if request == inv));
    // kill: INTERRUPT, and the callee's answer is what the caller gets.
    let r = call(&mut caller, "rpc.slow", Dict::new(), vec![]).await?;
    let (inv, _, _, _) = invocation(&mut callee).await?;
    caller
        .send(&Message::Cancel {
            request: r,
            options: dict([("mode", Value::from("kill"))]),
        })
        .await?;
    let int = callee
        .recv_matching(|m| matches!(m, Message::Interrupt { .. }))
        .await?;
    ensure!(
        matches!(&int, Message::Interrupt { request, options } if *request == inv && options.get("mode") == Some(&Value::from("kill"))),
        "{int:?}"
    );
    let early = caller
        .recv_matching_within(QUIET, |m| matches!(m, Message::Error { .. }))
        .await?;
    assert!(early.is_none(), "kill waits for the callee: {early:?}");
    callee
        .send(&Message::Error {
            request_type: code::INVOCATION,
            request: inv,
            details: Dict::new(),
            error: "wamp.error.canceled".into(),
            args: vec![],
            kwargs: Dict::new(),
        })
        .await?;
    assert_eq!(
        error_uri(&reply(&mut caller, r).await?),
        Some("wamp.error.canceled")
    );
    // timeout: the dealer gives up after 100 ms.
    let r = call(
        &mut caller,
        "rpc.slow",
        dict([("timeout", Value::from(100))]),
        vec![],
    )
    .await?;
    let (inv, _, details, _) = invocation(&mut callee).await?;
    assert_eq!(details.get("timeout"), Some(&Value::from(100)));
    assert_eq!(
        error_uri(&reply(&mut caller, r).await?),
        Some("wamp.error.timeout")
    );
    let int = callee
        .recv_matching(|m| matches!(m, Message::Interrupt { .. }))
        .await?;
    ensure!(matches!(int, Message::Interrupt { request, .. } if request == inv));
    // Bad cancel mode: an option of the wrong value is a protocol violation of
    // a non-request message (CANCEL has no ERROR reply): ABORT.
    caller
        .send(&Message::Cancel {
            request: 99,
            options: dict([("mode", Value::from("nuke"))]),
        })
        .await?;
    let seen = caller.expect_closed(Duration::from_secs(5)).await?;
    ensure!(
        matches!(seen.last(), Some(Message::Abort { .. })),
        "{seen:?}"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_registrations_follow_their_policy() -> Result {
    let node = TestNode::start().await?;
    let mut callees = Vec::new();
    for _ in 0..3 {
        callees.push(WampClient::join(node.wamp, Serializer::MsgPack, REALM).await?);
    }
    let mut caller = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    for (policy, want) in [
        ("roundrobin", vec![0, 1, 2, 0, 1, 2]),
        ("first", vec![0, 0, 0]),
        ("last", vec![2, 2, 2]),
        ("random", vec![]),
    ] {
        let procedure = format!("rpc.shared.{policy}");
        let mut reg = None;
        for c in callees.iter_mut() {
            let id = register(c, &procedure, dict([("invoke", Value::from(policy))])).await?;
            assert!(
                reg.is_none_or(|r| r == id),
                "one registration id per procedure"
            );
            reg = Some(id);
        }
        let rounds = if want.is_empty() { 6 } else { want.len() };
        let mut got = Vec::new();
        for _ in 0..rounds {
            let r = call(&mut caller, &procedure, Dict::new(), vec![]).await?;
            // Whoever got the INVOCATION answers with its index.
            let mut answered = None;
            for _ in 0..50 {
                for (i, c) in callees.iter_mut().enumerate() {
                    if let Some(Message::Invocation { request, .. }) = c
                        .recv_matching_within(Duration::from_millis(20), |m| {
                            matches!(m, Message::Invocation { .. })
                        })
                        .await?
                    {
                        yield_(c, request, false, vec![Value::from(i as u64)]).await?;
                        answered = Some(i);
                    }
                }
                if answered.is_some() {
                    break;
                }
            }
            got.push(answered.context("no callee invoked")?);
            reply(&mut caller, r).await?;
        }
        if !want.is_empty() {
            assert_eq!(got, want, "{policy}");
        }
    }
    // A single registration refuses a second callee; mixed policies refuse too.
    register(&mut callees[0], "rpc.single", Dict::new()).await?;
    let err = register(&mut callees[1], "rpc.single", Dict::new()).await;
    ensure!(
        format!("{err:?}").contains("procedure_already_exists"),
        "{err:?}"
    );
    let err = register(
        &mut callees[1],
        "rpc.shared.first",
        dict([("invoke", Value::from("last"))]),
    )
    .await;
    ensure!(
        format!("{err:?}").contains("procedure_already_exists"),
        "{err:?}"
    );
    // A bad invoke value is an ERROR for the REGISTER.
    let err = register(
        &mut callees[1],
        "rpc.bad",
        dict([("invoke", Value::from("sometimes"))]),
    )
    .await;
    ensure!(
        format!("{err:?}").contains("wamp.error.invalid_argument"),
        "{err:?}"
    );
    node.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_registrations_and_registration_meta() -> Result {
    let node = TestNode::start().await?;
    let mut callee = WampClient::join(node.wamp, Serializer::Json, REALM).await?;
    let exact = register(&mut callee, "pat.a.b", Dict::new()).await?;
    let short = register(&mut callee, "pat", dict([("match", Value::from("prefix"))])).await?;
    let long = register(
        &mut callee,
        "pat.a",
        dict([("match", Value::from("prefix"))]),
    )
    .await?;
    let wild = register(
        &mut callee,
        "pat..z",
        dict([("match", Value::from("wildcard"))]),
    )
    .await?;
    let mut caller =
        WampClient::join_rawsocket(node.wamp_rawsocket, Serializer::MsgPack, REALM).await?;
    for (uri, want) in [
        ("pat.a.b", exact),
        ("pat.a.c", long),
        ("pat.b.c", short),
        ("pat.a.z", long),
        ("other.y.z", 0),
    ] {
        let r = call(&mut caller, uri, Dict::new(), vec![]).await?;
        if want == 0 {
            assert_eq!(
                error_uri(&reply(&mut caller, r).await?),
                Some("wamp.error.no_such_procedure")
            );
            continue;
        }
        let (inv, reg, details, _) = invocation(&mut callee).await?;
        assert_eq!(reg, want, "{uri}");
        if reg != exact {
            assert_eq!(details.get("procedure"), Some(&Value::from(uri)));
        }
        yield_(&mut callee, inv, false, vec![]).await?;
        reply(&mut caller, r).await?;
    }
    let looked = meta(
        &mut caller,
        "wamp.registration.lookup",
        vec![
            Value::from("pat"),
            Value::Map(vec![(Value::from("match"), Value::from("prefix"))]),
        ],
    )
    .await?;
    assert_eq!(looked, vec![Value::from(short)]);
    let matched = meta(
        &mut caller,
        "wamp.registration.match",
        vec![Value::from("pat.q.z")],
    )
    .await?;
    assert_eq!(matched, vec![Value::from(short)]);
    let callees = meta(
        &mut caller,
        "wamp.registration.list_callees",
        vec![Value::from(wild)],
    )
    .await?;
    assert_eq!(
        callees,
        vec![Value::Array(vec![Value::from(callee.session)])]
    );
    let count = meta(
        &mut caller,
        "wamp.registration.count_callees",
        vec![Value::from(exact)],
    )
    .await?;
    assert_eq!(count, vec![Value::from(1u64)]);
    let got = meta(
        &mut caller,
        "wamp.registration.get",
        vec![Value::from(wild)],
    )
    .await?;
    let got = value_to_dict(got.first().cloned().context("get")?).context("dict")?;
    assert_eq!(got.get("match"), Some(&Value::from("wildcard")));
    let list = meta(&mut caller, "wamp.registration.list", vec![]).await?;
    let list = value_to_dict(list.first().cloned().context("list")?).context("dict")?;
    assert_eq!(
        list.get("prefix"),
        Some(&Value::Array(vec![Value::from(short), Value::from(long)]))
    );
    let missing = meta(
        &mut caller,
        "wamp.registration.get",
        vec![Value::from(424242u64)],
    )
    .await;
    ensure!(
        format!("{missing:?}").contains("no_such_registration"),
        "{missing:?}"
    );
    // The wamp. namespace belongs to the router.
    let err = register(&mut callee, "wamp.session.count", Dict::new()).await;
    ensure!(
        format!("{err:?}").contains("wamp.error.invalid_uri"),
        "{err:?}"
    );
    node.shutdown().await;
    Ok(())
}
