//! The WAMP message set and its type codes.

use std::collections::BTreeMap;

use rmpv::Value;

/// A WAMP dictionary: options, details, extra and keyword arguments.
pub type Dict = BTreeMap<String, Value>;

/// WAMP message type codes, the first element of every message array.
pub mod code {
    /// `[HELLO, Realm|uri, Details|dict]`
    pub const HELLO: u64 = 1;
    /// `[WELCOME, Session|id, Details|dict]`
    pub const WELCOME: u64 = 2;
    /// `[ABORT, Details|dict, Reason|uri]`
    pub const ABORT: u64 = 3;
    /// `[CHALLENGE, AuthMethod|string, Extra|dict]`
    pub const CHALLENGE: u64 = 4;
    /// `[AUTHENTICATE, Signature|string, Extra|dict]`
    pub const AUTHENTICATE: u64 = 5;
    /// `[GOODBYE, Details|dict, Reason|uri]`
    pub const GOODBYE: u64 = 6;
    /// `[ERROR, REQUEST.Type|int, REQUEST.Request|id, Details|dict, Error|uri, Args?, Kwargs?]`
    pub const ERROR: u64 = 8;
    /// `[PUBLISH, Request|id, Options|dict, Topic|uri, Args?, Kwargs?]`
    pub const PUBLISH: u64 = 16;
    /// `[PUBLISHED, PUBLISH.Request|id, Publication|id]`
    pub const PUBLISHED: u64 = 17;
    /// `[SUBSCRIBE, Request|id, Options|dict, Topic|uri]`
    pub const SUBSCRIBE: u64 = 32;
    /// `[SUBSCRIBED, SUBSCRIBE.Request|id, Subscription|id]`
    pub const SUBSCRIBED: u64 = 33;
    /// `[UNSUBSCRIBE, Request|id, SUBSCRIBED.Subscription|id]`
    pub const UNSUBSCRIBE: u64 = 34;
    /// `[UNSUBSCRIBED, UNSUBSCRIBE.Request|id, Details|dict?]`
    pub const UNSUBSCRIBED: u64 = 35;
    /// `[EVENT, Subscription|id, Publication|id, Details|dict, Args?, Kwargs?]`
    pub const EVENT: u64 = 36;
    /// `[CALL, Request|id, Options|dict, Procedure|uri, Args?, Kwargs?]`
    pub const CALL: u64 = 48;
    /// `[CANCEL, CALL.Request|id, Options|dict]`
    pub const CANCEL: u64 = 49;
    /// `[RESULT, CALL.Request|id, Details|dict, Args?, Kwargs?]`
    pub const RESULT: u64 = 50;
    /// `[REGISTER, Request|id, Options|dict, Procedure|uri]`
    pub const REGISTER: u64 = 64;
    /// `[REGISTERED, REGISTER.Request|id, Registration|id]`
    pub const REGISTERED: u64 = 65;
    /// `[UNREGISTER, Request|id, REGISTERED.Registration|id]`
    pub const UNREGISTER: u64 = 66;
    /// `[UNREGISTERED, UNREGISTER.Request|id, Details|dict?]`
    pub const UNREGISTERED: u64 = 67;
    /// `[INVOCATION, Request|id, REGISTERED.Registration|id, Details|dict, Args?, Kwargs?]`
    pub const INVOCATION: u64 = 68;
    /// `[INTERRUPT, INVOCATION.Request|id, Options|dict]`
    pub const INTERRUPT: u64 = 69;
    /// `[YIELD, INVOCATION.Request|id, Options|dict, Args?, Kwargs?]`
    pub const YIELD: u64 = 70;
}

/// Every supported message: code and name, in code order.
pub(crate) const MESSAGES: [(u64, &str); 24] = [
    (code::HELLO, "HELLO"),
    (code::WELCOME, "WELCOME"),
    (code::ABORT, "ABORT"),
    (code::CHALLENGE, "CHALLENGE"),
    (code::AUTHENTICATE, "AUTHENTICATE"),
    (code::GOODBYE, "GOODBYE"),
    (code::ERROR, "ERROR"),
    (code::PUBLISH, "PUBLISH"),
    (code::PUBLISHED, "PUBLISHED"),
    (code::SUBSCRIBE, "SUBSCRIBE"),
    (code::SUBSCRIBED, "SUBSCRIBED"),
    (code::UNSUBSCRIBE, "UNSUBSCRIBE"),
    (code::UNSUBSCRIBED, "UNSUBSCRIBED"),
    (code::EVENT, "EVENT"),
    (code::CALL, "CALL"),
    (code::CANCEL, "CANCEL"),
    (code::RESULT, "RESULT"),
    (code::REGISTER, "REGISTER"),
    (code::REGISTERED, "REGISTERED"),
    (code::UNREGISTER, "UNREGISTER"),
    (code::UNREGISTERED, "UNREGISTERED"),
    (code::INVOCATION, "INVOCATION"),
    (code::INTERRUPT, "INTERRUPT"),
    (code::YIELD, "YIELD"),
];

/// Return the name of a supported message code.
pub(crate) fn name_of(code: u64) -> Option<&'static str> {
    MESSAGES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

/// Return the code of a supported message name.
pub(crate) fn code_of(name: &str) -> Option<u64> {
    MESSAGES.iter().find(|(_, n)| *n == name).map(|(c, _)| *c)
}

/// One WAMP message. `args` and `kwargs` are empty when absent on the wire.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // fields are named as in the WAMP specification
pub enum Message {
    /// Client opens a session on a realm.
    Hello { realm: String, details: Dict },
    /// Router accepts a session.
    Welcome { session: u64, details: Dict },
    /// Either side refuses or ends a session before it is established.
    Abort { details: Dict, reason: String },
    /// Router asks the client to authenticate.
    Challenge { authmethod: String, extra: Dict },
    /// Client answers a challenge.
    Authenticate { signature: String, extra: Dict },
    /// Either side closes an established session.
    Goodbye { details: Dict, reason: String },
    /// A request failed.
    Error {
        request_type: u64,
        request: u64,
        details: Dict,
        error: String,
        args: Vec<Value>,
        kwargs: Dict,
    },
    /// Publisher publishes an event on a topic.
    Publish {
        request: u64,
        options: Dict,
        topic: String,
        args: Vec<Value>,
        kwargs: Dict,
    },
    /// Broker acknowledges a publish.
    Published { request: u64, publication: u64 },
    /// Subscriber subscribes to a topic (or pattern).
    Subscribe {
        request: u64,
        options: Dict,
        topic: String,
    },
    /// Broker acknowledges a subscribe.
    Subscribed { request: u64, subscription: u64 },
    /// Subscriber ends a subscription.
    Unsubscribe { request: u64, subscription: u64 },
    /// Broker acknowledges an unsubscribe (details are optional on the wire).
    Unsubscribed { request: u64, details: Dict },
    /// Broker delivers an event to a subscriber.
    Event {
        subscription: u64,
        publication: u64,
        details: Dict,
        args: Vec<Value>,
        kwargs: Dict,
    },
    /// Caller calls a procedure.
    Call {
        request: u64,
        options: Dict,
        procedure: String,
        args: Vec<Value>,
        kwargs: Dict,
    },
    /// Caller cancels a call.
    Cancel { request: u64, options: Dict },
    /// Dealer returns a call's result.
    Result {
        request: u64,
        details: Dict,
        args: Vec<Value>,
        kwargs: Dict,
    },
    /// Callee registers a procedure.
    Register {
        request: u64,
        options: Dict,
        procedure: String,
    },
    /// Dealer acknowledges a register.
    Registered { request: u64, registration: u64 },
    /// Callee ends a registration.
    Unregister { request: u64, registration: u64 },
    /// Dealer acknowledges an unregister (details are optional on the wire).
    Unregistered { request: u64, details: Dict },
    /// Dealer invokes a registered procedure on the callee.
    Invocation {
        request: u64,
        registration: u64,
        details: Dict,
        args: Vec<Value>,
        kwargs: Dict,
    },
    /// Dealer interrupts an invocation.
    Interrupt { request: u64, options: Dict },
    /// Callee yields an invocation's result.
    Yield {
        request: u64,
        options: Dict,
        args: Vec<Value>,
        kwargs: Dict,
    },
}

impl Message {
    /// Return the WAMP message type code, as in [`code`].
    pub fn code(&self) -> u64 {
        match self {
            Self::Hello { .. } => code::HELLO,
            Self::Welcome { .. } => code::WELCOME,
            Self::Abort { .. } => code::ABORT,
            Self::Challenge { .. } => code::CHALLENGE,
            Self::Authenticate { .. } => code::AUTHENTICATE,
            Self::Goodbye { .. } => code::GOODBYE,
            Self::Error { .. } => code::ERROR,
            Self::Publish { .. } => code::PUBLISH,
            Self::Published { .. } => code::PUBLISHED,
            Self::Subscribe { .. } => code::SUBSCRIBE,
            Self::Subscribed { .. } => code::SUBSCRIBED,
            Self::Unsubscribe { .. } => code::UNSUBSCRIBE,
            Self::Unsubscribed { .. } => code::UNSUBSCRIBED,
            Self::Event { .. } => code::EVENT,
            Self::Call { .. } => code::CALL,
            Self::Cancel { .. } => code::CANCEL,
            Self::Result { .. } => code::RESULT,
            Self::Register { .. } => code::REGISTER,
            Self::Registered { .. } => code::REGISTERED,
            Self::Unregister { .. } => code::UNREGISTER,
            Self::Unregistered { .. } => code::UNREGISTERED,
            Self::Invocation { .. } => code::INVOCATION,
            Self::Interrupt { .. } => code::INTERRUPT,
            Self::Yield { .. } => code::YIELD,
        }
    }

    /// Return the upper-case WAMP name of the message type, e.g. `"PUBLISH"`.
    pub fn name(&self) -> &'static str {
        name_of(self.code()).unwrap_or("UNKNOWN")
    }
}
