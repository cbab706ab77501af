//! WAMP RPC: registrations and calls in flight.
//!
//! ```text
//!  CALL ─► find registration (exact, else longest prefix, else first wildcard)
//!       ─► pick a callee by its invocation policy ─► INVOCATION
//!  YIELD / ERROR ─► RESULT / ERROR to the caller (progressive results keep the call open)
//!  CANCEL (skip | kill | killnowait), call timeout, a session leaving ─► INTERRUPT / ERROR
//! ```
//!
//! Calls are not part of the ordered log; the dealer only routes messages.
//! It reads no clock: the session arms call timeouts and calls
//! [`Dealer::timeout`]. The `random` policy draws from a xorshift generator
//! with a fixed seed, so runs replay.

use super::broker::SessionInfo;
use crate::router::SessionId;
use ordo_common::topic::{self, Filter};
use ordo_common::wamp::{code, Dict, Message, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// A WAMP error URI, as returned to the client.
pub type ErrorUri = &'static str;

/// How a shared registration picks the callee of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invoke {
    /// One callee only; a second REGISTER fails.
    Single,
    /// Each callee in turn.
    RoundRobin,
    /// A random callee.
    Random,
    /// The callee that registered first.
    First,
    /// The callee that registered last.
    Last,
}

impl Invoke {
    fn parse(name: &str) -> Option<Invoke> {
        Some(match name {
            "single" => Invoke::Single,
            "roundrobin" => Invoke::RoundRobin,
            "random" => Invoke::Random,
            "first" => Invoke::First,
            "last" => Invoke::Last,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Invoke::Single => "single",
            Invoke::RoundRobin => "roundrobin",
            Invoke::Random => "random",
            Invoke::First => "first",
            Invoke::Last => "last",
        }
    }
}

#[derive(Clone, Copy)]
struct Callee {
    session: SessionId,
    disclose_caller: bool,
}

/// A registration as the meta API shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistrationView {
    /// Realm.
    pub realm: String,
    /// Procedure URI or pattern.
    pub uri: String,
    /// `exact`, `prefix` or `wildcard`.
    pub policy: String,
    /// Invocation policy.
    pub invoke: Invoke,
    /// When it was created (ISO 8601, as the caller gave it).
    pub created: String,
    /// Callee sessions, in registration order.
    pub callees: Vec<SessionId>,
}

impl RegistrationView {
    /// Render as the dict `wamp.registration.get` returns.
    pub fn to_dict(&self, id: u64) -> Dict {
        let mut d = Dict::new();
        d.insert("id".into(), Value::from(id));
        d.insert("created".into(), Value::from(self.created.as_str()));
        d.insert("uri".into(), Value::from(self.uri.as_str()));
        d.insert("match".into(), Value::from(self.policy.as_str()));
        d.insert("invoke".into(), Value::from(self.invoke.name()));
        d
    }
}

/// A successful REGISTER; `created` when it made a new registration (`on_create`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The registration id.
    pub id: u64,
    /// The registration did not exist before.
    pub created: bool,
}

/// One registration a session was removed from (`on_unregister`, and `on_delete` if `deleted`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unregistered {
    /// The registration id.
    pub id: u64,
    /// The session was its last callee, so it is gone.
    pub deleted: bool,
}

struct Registration {
    realm: String,
    uri: String,
    policy: String,
    invoke: Invoke,
    created: String,
    callees: Vec<Callee>,
    next: usize,
}

struct PendingCall {
    caller: SessionId,
    caller_request: u64,
    callee: SessionId,
    receive_progress: bool,
}

struct Peer {
    tx: mpsc::UnboundedSender<Message>,
    authid: String,
    authrole: String,
    /// The session announced `callee.features.call_canceling`.
    cancels: bool,
}

#[derive(Default)]
struct State {
    next_id: u64,
    rng: u64,
    sessions: HashMap<SessionId, Peer>,
    by_key: BTreeMap<(String, String, String), u64>,
    registrations: BTreeMap<u64, Registration>,
    /// Invocation request id -> call.
    calls: HashMap<u64, PendingCall>,
    /// (caller, CALL request id) -> invocation request id.
    by_caller: HashMap<(SessionId, u64), u64>,
}

/// One CALL, as the session hands it to the dealer.
pub struct CallRequest<'a> {
    /// Calling session.
    pub caller: SessionId,
    /// Its realm.
    pub realm: &'a str,
    /// The CALL request id.
    pub request: u64,
    /// Procedure URI.
    pub procedure: &'a str,
    /// CALL options.
    pub options: &'a Dict,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Dict,
}

/// The RPC routing table shared by all WAMP sessions.
#[derive(Default)]
pub struct Dealer {
    state: Mutex<State>,
}

fn flag(options: &Dict, key: &str) -> bool {
    matches!(options.get(key), Some(Value::Boolean(true)))
}

impl Dealer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attach a session; RPC messages for it arrive on the returned queue.
    pub fn join(
        &self,
        session: SessionId,
        info: &SessionInfo,
        cancels: bool,
    ) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        let peer = Peer {
            tx,
            authid: info.authid.clone(),
            authrole: info.authrole.clone(),
            cancels,
        };
        self.lock().sessions.insert(session, peer);
        rx
    }

    /// Detach a session: drop its registrations, fail calls it was serving and
    /// interrupt calls it made. Return the registrations it left, in id order.
    pub fn leave(&self, session: SessionId) -> Vec<Unregistered> {
        let mut state = self.lock();
        state.sessions.remove(&session);
        let regs: Vec<u64> = state.registrations.keys().copied().collect();
        let left = regs
            .into_iter()
            .filter_map(|id| remove_callee(&mut state, id, session))
            .collect();
        let lost: Vec<u64> = state
            .calls
            .iter()
            .filter(|(_, c)| c.callee == session || c.caller == session)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            let Some(call) = take_call(&mut state, id) else {
                continue;
            };
            if call.callee == session {
                let reply = error(code::CALL, call.caller_request, "wamp.error.canceled");
                send(&state, call.caller, reply);
            } else {
                interrupt(&state, id, call.callee, "killnowait");
            }
        }
        left
    }

    /// Register a procedure (or pattern) for a session; a new registration is
    /// stamped `created`.
    ///
    /// A procedure already registered with the same match policy is shared
    /// when both registrations ask for the same `invoke` policy other than
    /// `single`; otherwise the REGISTER fails.
    pub fn register(
        &self,
        session: SessionId,
        realm: &str,
        procedure: &str,
        options: &Dict,
        created: &str,
    ) -> Result<Registered, ErrorUri> {
        if procedure.starts_with("wamp.") {
            return Err("wamp.error.invalid_uri");
        }
        let policy = options
            .get("match")
            .and_then(Value::as_str)
            .unwrap_or("exact");
        let invoke = match options.get("invoke") {
            None => Invoke::Single,
            Some(v) => v
                .as_str()
                .and_then(Invoke::parse)
                .ok_or("wamp.error.invalid_argument")?,
        };
        if Filter::wamp(procedure, policy).is_none() {
            return Err("wamp.error.invalid_argument");
        }
        let callee = Callee {
            session,
            disclose_caller: flag(options, "disclose_caller"),
        };
        let mut state = self.lock();
        let key = (realm.to_owned(), procedure.to_owned(), policy.to_owned());
        if let Some(&id) = state.by_key.get(&key) {
            let Some(reg) = state.registrations.get_mut(&id) else {
                return Err("wamp.error.procedure_already_exists");
            };
            if reg.invoke == Invoke::Single || reg.invoke != invoke {
                return Err("wamp.error.procedure_already_exists");
            }
            if reg.callees.iter().any(|c| c.session == session) {
                return Err("wamp.error.procedure_already_exists");
            }
            reg.callees.push(callee);
            return Ok(Registered { id, created: false });
        }
        state.next_id += 1;
        let id = state.next_id;
        state.by_key.insert(key, id);
        state.registrations.insert(
            id,
            Registration {
                realm: realm.to_owned(),
                uri: procedure.to_owned(),
                policy: policy.to_owned(),
                invoke,
                created: created.to_owned(),
                callees: vec![callee],
                next: 0,
            },
        );
        Ok(Registered { id, created: true })
    }

    /// Remove a session from a registration it holds.
    pub fn unregister(
        &self,
        session: SessionId,
        registration: u64,
    ) -> Result<Unregistered, ErrorUri> {
        remove_callee(&mut self.lock(), registration, session)
            .ok_or("wamp.error.no_such_registration")
    }

    /// Route a CALL to a callee as an INVOCATION.
    ///
    /// Returns `Some((invocation, ms))` when the call has a timeout: the caller
    /// then calls [`Dealer::timeout`] with `invocation` after `ms` milliseconds.
    pub fn call(&self, call: CallRequest<'_>) -> Result<Option<(u64, u64)>, ErrorUri> {
        let mut state = self.lock();
        let reg_id =
            find(&state, call.realm, call.procedure).ok_or("wamp.error.no_such_procedure")?;
        let draw = next_random(&mut state);
        let Some(reg) = state.registrations.get_mut(&reg_id) else {
            return Err("wamp.error.no_such_procedure");
        };
        let n = reg.callees.len();
        let index = match reg.invoke {
            Invoke::Single | Invoke::First => 0,
            Invoke::Last => n.saturating_sub(1),
            Invoke::RoundRobin => {
                let i = reg.next % n.max(1);
                reg.next = i + 1;
                i
            }
            Invoke::Random => (draw % n.max(1) as u64) as usize,
        };
        let Some(callee) = reg.callees.get(index).copied() else {
            return Err("wamp.error.no_such_procedure");
        };
        let pattern = reg.policy != "exact";
        let receive_progress = flag(call.options, "receive_progress");
        let mut details = Dict::new();
        if pattern {
            details.insert("procedure".into(), Value::from(call.procedure));
        }
        if receive_progress {
            details.insert("receive_progress".into(), Value::Boolean(true));
        }
        if callee.disclose_caller || flag(call.options, "disclose_me") {
            details.insert("caller".into(), Value::from(call.caller));
            if let Some(peer) = state.sessions.get(&call.caller) {
                details.insert("caller_authid".into(), Value::from(peer.authid.as_str()));
                details.insert(
                    "caller_authrole".into(),
                    Value::from(peer.authrole.as_str()),
                );
            }
        }
        let timeout = call
            .options
            .get("timeout")
            .and_then(Value::as_u64)
            .filter(|ms| *ms > 0);
        if let Some(ms) = timeout {
            details.insert("timeout".into(), Value::from(ms));
        }
        state.next_id += 1;
        let invocation = state.next_id;
        state.calls.insert(
            invocation,
            PendingCall {
                caller: call.caller,
                caller_request: call.request,
                callee: callee.session,
                receive_progress,
            },
        );
        state
            .by_caller
            .insert((call.caller, call.request), invocation);
        let message = Message::Invocation {
            request: invocation,
            registration: reg_id,
            details,
            args: call.args,
            kwargs: call.kwargs,
        };
        send(&state, callee.session, message);
        Ok(timeout.map(|ms| (invocation, ms)))
    }

    /// End a call whose timeout expired: `wamp.error.timeout` to the caller,
    /// INTERRUPT to the callee. Does nothing if the call already ended.
    pub fn timeout(&self, invocation: u64) {
        let mut state = self.lock();
        if let Some(call) = take_call(&mut state, invocation) {
            interrupt(&state, invocation, call.callee, "killnowait");
            let reply = error(code::CALL, call.caller_request, "wamp.error.timeout");
            send(&state, call.caller, reply);
        }
    }

    /// Cancel a caller's call (`mode`: `skip`, `kill` or `killnowait`, default `killnowait`).
    ///
    /// `skip` and `killnowait` answer the caller with `wamp.error.canceled`
    /// at once; `kill` interrupts the callee and forwards its answer. A callee
    /// that does not announce `call_canceling` gets no INTERRUPT (`kill` acts as `skip`).
    pub fn cancel(&self, caller: SessionId, request: u64, options: &Dict) {
        let mut state = self.lock();
        let Some(&invocation) = state.by_caller.get(&(caller, request)) else {
            return;
        };
        let Some(callee) = state.calls.get(&invocation).map(|c| c.callee) else {
            return;
        };
        let cancels = state.sessions.get(&callee).is_some_and(|p| p.cancels);
        let mode = options
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or("killnowait");
        if mode == "kill" && cancels {
            interrupt(&state, invocation, callee, "kill");
            return;
        }
        if let Some(call) = take_call(&mut state, invocation) {
            if mode == "killnowait" {
                interrupt(&state, invocation, call.callee, "killnowait");
            }
            let reply = error(code::CALL, call.caller_request, "wamp.error.canceled");
            send(&state, call.caller, reply);
        }
    }

    /// Route a YIELD back to the caller as RESULT; a progressive result keeps
    /// the call open (and is dropped if the caller did not ask for progress).
    pub fn yield_result(
        &self,
        callee: SessionId,
        request: u64,
        options: &Dict,
        args: Vec<Value>,
        kwargs: Dict,
    ) {
        let mut state = self.lock();
        let progress = flag(options, "progress");
        let Some(call) = state.calls.get(&request) else {
            return;
        };
        if call.callee != callee {
            return;
        }
        let (caller, caller_request) = (call.caller, call.caller_request);
        if progress && !call.receive_progress {
            return;
        }
        if !progress {
            take_call(&mut state, request);
        }
        let mut details = Dict::new();
        if progress {
            details.insert("progress".into(), Value::Boolean(true));
        }
        let result = Message::Result {
            request: caller_request,
            details,
            args,
            kwargs,
        };
        send(&state, caller, result);
    }

    /// Route a callee's ERROR for an invocation back to the caller.
    pub fn invocation_error(
        &self,
        callee: SessionId,
        request: u64,
        uri: String,
        args: Vec<Value>,
        kwargs: Dict,
    ) {
        let mut state = self.lock();
        match state.calls.get(&request) {
            Some(call) if call.callee == callee => {}
            _ => return,
        }
        if let Some(call) = take_call(&mut state, request) {
            let message = Message::Error {
                request_type: code::CALL,
                request: call.caller_request,
                details: Dict::new(),
                error: uri,
                args,
                kwargs,
            };
            send(&state, call.caller, message);
        }
    }

    /// Return the registration ids of `realm` by match policy.
    pub fn list(&self, realm: &str) -> BTreeMap<String, Vec<u64>> {
        let mut out: BTreeMap<String, Vec<u64>> = ["exact", "prefix", "wildcard"]
            .into_iter()
            .map(|p| (p.to_owned(), Vec::new()))
            .collect();
        let state = self.lock();
        for (id, r) in state.registrations.iter().filter(|(_, r)| r.realm == realm) {
            out.entry(r.policy.clone()).or_default().push(*id);
        }
        out
    }

    /// Return the registration for exactly this URI and policy.
    pub fn lookup(&self, realm: &str, uri: &str, policy: &str) -> Option<u64> {
        let key = (realm.to_owned(), uri.to_owned(), policy.to_owned());
        self.lock().by_key.get(&key).copied()
    }

    /// Return the registration a call to `uri` would reach.
    pub fn best_match(&self, realm: &str, uri: &str) -> Option<u64> {
        find(&self.lock(), realm, uri)
    }

    /// Return one registration.
    pub fn registration(&self, id: u64) -> Option<RegistrationView> {
        self.lock()
            .registrations
            .get(&id)
            .map(|r| RegistrationView {
                realm: r.realm.clone(),
                uri: r.uri.clone(),
                policy: r.policy.clone(),
                invoke: r.invoke,
                created: r.created.clone(),
                callees: r.callees.iter().map(|c| c.session).collect(),
            })
    }
}

/// Find the registration for a call: exact, else the longest prefix, else the
/// first (lowest id) matching wildcard.
fn find(state: &State, realm: &str, uri: &str) -> Option<u64> {
    let exact = (realm.to_owned(), uri.to_owned(), "exact".to_owned());
    if let Some(id) = state.by_key.get(&exact) {
        return Some(*id);
    }
    let in_realm = || state.registrations.iter().filter(|(_, r)| r.realm == realm);
    let prefix = in_realm()
        .filter(|(_, r)| r.policy == "prefix" && uri.starts_with(r.uri.as_str()))
        .max_by_key(|(_, r)| r.uri.len())
        .map(|(id, _)| *id);
    if prefix.is_some() {
        return prefix;
    }
    let internal = topic::from_wamp_uri(uri);
    in_realm()
        .filter(|(_, r)| r.policy == "wildcard")
        .find(|(_, r)| Filter::wamp(&r.uri, "wildcard").is_some_and(|f| f.matches(&internal)))
        .map(|(id, _)| *id)
}

fn next_random(state: &mut State) -> u64 {
    // xorshift64, seeded once.
    let mut x = if state.rng == 0 {
        0x9e37_79b9_7f4a_7c15
    } else {
        state.rng
    };
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state.rng = x;
    x
}

/// Remove a callee from a registration, deleting it when empty; `None` if it was not there.
fn remove_callee(state: &mut State, id: u64, session: SessionId) -> Option<Unregistered> {
    let reg = state.registrations.get_mut(&id)?;
    let before = reg.callees.len();
    reg.callees.retain(|c| c.session != session);
    if reg.callees.len() == before {
        return None;
    }
    let deleted = reg.callees.is_empty();
    if deleted {
        if let Some(r) = state.registrations.remove(&id) {
            state.by_key.remove(&(r.realm, r.uri, r.policy));
        }
    }
    Some(Unregistered { id, deleted })
}

fn take_call(state: &mut State, invocation: u64) -> Option<PendingCall> {
    let call = state.calls.remove(&invocation)?;
    state.by_caller.remove(&(call.caller, call.caller_request));
    Some(call)
}

fn interrupt(state: &State, invocation: u64, callee: SessionId, mode: &str) {
    if state.sessions.get(&callee).is_some_and(|p| p.cancels) {
        let mut options = Dict::new();
        options.insert("mode".into(), Value::from(mode));
        let message = Message::Interrupt {
            request: invocation,
            options,
        };
        send(state, callee, message);
    }
}

fn send(state: &State, session: SessionId, message: Message) {
    if let Some(peer) = state.sessions.get(&session) {
        let _ = peer.tx.send(message);
    }
}

/// Build an ERROR reply for a request.
pub fn error(request_type: u64, request: u64, uri: &str) -> Message {
    Message::Error {
        request_type,
        request,
        details: Dict::new(),
        error: uri.to_owned(),
        args: Vec::new(),
        kwargs: Dict::new(),
    }
}
