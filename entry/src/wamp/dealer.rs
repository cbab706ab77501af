//! WAMP RPC: registrations and calls in flight.
//!
//! Calls are not part of the ordered log; the dealer only routes CALL to the
//! callee as INVOCATION and YIELD/ERROR back to the caller as RESULT/ERROR.

use crate::router::SessionId;
use ordo_common::wamp::{code, Dict, Message, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// A WAMP error URI, as returned to the client.
pub type ErrorUri = &'static str;

struct Registration {
    realm: String,
    procedure: String,
    session: SessionId,
}

struct PendingCall {
    caller: SessionId,
    caller_request: u64,
    callee: SessionId,
}

#[derive(Default)]
struct State {
    next_id: u64,
    sessions: HashMap<SessionId, mpsc::UnboundedSender<Message>>,
    by_procedure: HashMap<(String, String), u64>,
    registrations: HashMap<u64, Registration>,
    /// Invocation request id -> call.
    calls: HashMap<u64, PendingCall>,
}

/// The RPC routing table shared by all WAMP sessions.
#[derive(Default)]
pub struct Dealer {
    state: Mutex<State>,
}

impl Dealer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Attach a session; RPC messages for it arrive on the returned queue.
    pub fn join(&self, session: SessionId) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().sessions.insert(session, tx);
        rx
    }

    /// Detach a session: drop its registrations and fail calls it was serving.
    pub fn leave(&self, session: SessionId) {
        let mut state = self.lock();
        state.sessions.remove(&session);
        let regs: Vec<u64> = state
            .registrations
            .iter()
            .filter(|(_, r)| r.session == session)
            .map(|(id, _)| *id)
            .collect();
        for id in regs {
            if let Some(r) = state.registrations.remove(&id) {
                state.by_procedure.remove(&(r.realm, r.procedure));
            }
        }
        let lost: Vec<u64> = state
            .calls
            .iter()
            .filter(|(_, c)| c.callee == session || c.caller == session)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some(call) = state.calls.remove(&id) {
                if call.callee == session {
                    send(
                        &state,
                        call.caller,
                        error(code::CALL, call.caller_request, "wamp.error.canceled"),
                    );
                }
            }
        }
    }

    /// Register a procedure for a session; fail if it is already registered in the realm.
    pub fn register(
        &self,
        session: SessionId,
        realm: &str,
        procedure: &str,
    ) -> Result<u64, ErrorUri> {
        let mut state = self.lock();
        let key = (realm.to_owned(), procedure.to_owned());
        if state.by_procedure.contains_key(&key) {
            return Err("wamp.error.procedure_already_exists");
        }
        state.next_id += 1;
        let id = state.next_id;
        state.by_procedure.insert(key, id);
        state.registrations.insert(
            id,
            Registration {
                realm: realm.to_owned(),
                procedure: procedure.to_owned(),
                session,
            },
        );
        Ok(id)
    }

    /// Remove a registration owned by the session.
    pub fn unregister(&self, session: SessionId, registration: u64) -> Result<(), ErrorUri> {
        let mut state = self.lock();
        match state.registrations.get(&registration) {
            Some(r) if r.session == session => {
                if let Some(r) = state.registrations.remove(&registration) {
                    state.by_procedure.remove(&(r.realm, r.procedure));
                }
                Ok(())
            }
            _ => Err("wamp.error.no_such_registration"),
        }
    }

    /// Route a CALL to the callee as an INVOCATION.
    pub fn call(
        &self,
        caller: SessionId,
        realm: &str,
        request: u64,
        procedure: &str,
        args: Vec<Value>,
        kwargs: Dict,
    ) -> Result<(), ErrorUri> {
        let mut state = self.lock();
        let Some(reg_id) = state
            .by_procedure
            .get(&(realm.to_owned(), procedure.to_owned()))
            .copied()
        else {
            return Err("wamp.error.no_such_procedure");
        };
        let Some(callee) = state.registrations.get(&reg_id).map(|r| r.session) else {
            return Err("wamp.error.no_such_procedure");
        };
        state.next_id += 1;
        let invocation = state.next_id;
        state.calls.insert(
            invocation,
            PendingCall {
                caller,
                caller_request: request,
                callee,
            },
        );
        let message = Message::Invocation {
            request: invocation,
            registration: reg_id,
            details: Dict::new(),
            args,
            kwargs,
        };
        send(&state, callee, message);
        Ok(())
    }

    /// Route a YIELD back to the caller as RESULT; a progressive result keeps the call open.
    pub fn yield_result(
        &self,
        callee: SessionId,
        request: u64,
        options: &Dict,
        args: Vec<Value>,
        kwargs: Dict,
    ) {
        let mut state = self.lock();
        let progress = matches!(options.get("progress"), Some(Value::Boolean(true)));
        let Some(call) = state.calls.get(&request) else {
            return;
        };
        if call.callee != callee {
            return;
        }
        let (caller, caller_request) = (call.caller, call.caller_request);
        if !progress {
            state.calls.remove(&request);
        }
        let mut details = Dict::new();
        if progress {
            details.insert("progress".into(), Value::Boolean(true));
        }
        send(
            &state,
            caller,
            Message::Result {
                request: caller_request,
                details,
                args,
                kwargs,
            },
        );
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
        if let Some(call) = state.calls.remove(&request) {
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
}

fn send(state: &State, session: SessionId, message: Message) {
    if let Some(tx) = state.sessions.get(&session) {
        let _ = tx.send(message);
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
