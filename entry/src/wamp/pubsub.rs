//! A session's publish and subscribe handlers: PUBLISH into the sequencer,
//! SUBSCRIBE into the router and the broker table, EVENT out with the details
//! the advanced profile adds (topic, publisher, retained), filtered by the
//! publication's black/whitelists.

use super::auth::Action;
use super::dealer::error;
use super::meta::{announce_change, Change, Kind};
use super::session::{Session, SessionError};
use crate::router::{kv, Delivery, SubscriptionId, SubscriptionSpec};
use crate::sequencer::PublishError;
use ordo_common::topic::{self, Filter};
use ordo_common::wamp::{code, validate_uri, Dict, Message, PublishOptions, Publisher, Value};
use ordo_common::{Payload, PermanentId, StoredMessage};
use std::sync::Arc;

const REPLAY_CHUNK: usize = 512;
/// How far back `wamp.subscription.get_events` looks in the log, in messages.
pub(super) const HISTORY_WINDOW: u64 = 65_536;
/// The most events `wamp.subscription.get_events` returns.
pub(super) const HISTORY_LIMIT: usize = 1000;

fn flag(options: &Dict, key: &str) -> bool {
    matches!(options.get(key), Some(Value::Boolean(true)))
}

impl Session {
    pub(super) async fn publish(
        &mut self,
        request: u64,
        options: Dict,
        uri: String,
        args: Vec<Value>,
        kwargs: Dict,
    ) -> Result<(), SessionError> {
        let acknowledge = flag(&options, "acknowledge");
        // The `wamp.` prefix is the router's own (meta events).
        if !validate_uri(&uri, false) || uri.starts_with("wamp.") {
            if acknowledge {
                self.feed(&error(code::PUBLISH, request, "wamp.error.invalid_uri"))
                    .await?;
            }
            return Ok(());
        }
        let exclude_me = !matches!(options.get("exclude_me"), Some(Value::Boolean(false)));
        let publisher = Publisher {
            session: self.id,
            authid: self.info.authid.clone(),
            authrole: self.info.authrole.clone(),
        };
        let mut wamp = PublishOptions::from_options(&options, publisher);
        // `when` and `will` act on the topic's retained value, so they imply `retain`.
        let origin = self.shared.config.owner;
        let fox = super::fox::publish_options(&options, origin, acknowledge.then_some(request));
        let conditional = fox.as_ref().is_some_and(|f| f.when.is_some());
        if let Some(fox) = fox {
            self.fox_used = true;
            wamp = super::fox::attach(wamp, fox);
        }
        let message = StoredMessage {
            realm: self.info.realm.clone(),
            topic: topic::from_wamp_uri(&uri),
            payload: Payload::Wamp { args, kwargs },
            qos: 1,
            retain: flag(&options, "retain") || wamp.as_ref().is_some_and(|w| w.fox.is_some()),
            publisher: self.id,
            exclude_publisher: exclude_me,
            mqtt: None,
            wamp,
        };
        // A conditional publish is answered by its outcome (PUBLISHED or
        // condition_failed); the sequencer's ack only reports a storage failure.
        match self.shared.sequencer.publish(message, acknowledge).await {
            Ok(Some(rx)) => self.acks.push_back(Box::pin(async move {
                (
                    request,
                    rx.await.unwrap_or(Err(PublishError::Stopped)),
                    !conditional,
                )
            })),
            Ok(None) => {}
            Err(e) => {
                if acknowledge {
                    tracing::error!(error = %e, "publish refused");
                    self.feed(&error(code::PUBLISH, request, "wamp.error.storage_failed"))
                        .await?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn subscribe(
        &mut self,
        request: u64,
        options: Dict,
        uri: String,
    ) -> Result<(), SessionError> {
        let policy = match options.get("match") {
            None => "exact",
            Some(v) => v.as_str().unwrap_or("?"),
        };
        let filter = match Filter::wamp(&uri, policy) {
            Some(f)
                if validate_uri(&uri, policy == "wildcard")
                    || (policy == "prefix" && !uri.is_empty()) =>
            {
                f
            }
            Some(_) => {
                return self
                    .feed(&error(code::SUBSCRIBE, request, "wamp.error.invalid_uri"))
                    .await
            }
            None => {
                return self
                    .feed(&error(
                        code::SUBSCRIBE,
                        request,
                        "wamp.error.invalid_argument",
                    ))
                    .await
            }
        };
        let pattern = super::fox::subscribe_filter(&options);
        let after = match options.get("after") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(n) => Some(PermanentId(n)),
                None => {
                    return self
                        .feed(&error(
                            code::SUBSCRIBE,
                            request,
                            "wamp.error.invalid_argument",
                        ))
                        .await
                }
            },
        };
        let created = super::meta::now_iso8601();
        let change =
            self.shared
                .broker
                .subscribe(self.id, &self.info.realm, &uri, policy, &created);
        let group = change.id;
        if self.groups.contains_key(&group) {
            // Already subscribed: the same subscription again, nothing replayed.
            return self
                .feed(&Message::Subscribed {
                    request,
                    subscription: group,
                })
                .await;
        }
        let spec = SubscriptionSpec {
            realm: self.info.realm.clone(),
            filter: filter.clone(),
            qos: 0,
            exclude_own: false,
        };
        let subscribed = self.shared.router.subscribe(self.id, vec![spec]);
        let Some(&sub) = subscribed.ids.first() else {
            return Ok(());
        };
        self.subscriptions.insert(sub, (group, policy != "exact"));
        self.groups.insert(group, sub);
        if let Some(pattern) = pattern {
            self.filters.insert(sub, pattern);
        }
        // fox-wamp's `retained`: the retained state, then only what changes it.
        let retained_only = flag(&options, "retained");
        if retained_only {
            self.retained_only.insert(sub);
        }
        self.feed(&Message::Subscribed {
            request,
            subscription: group,
        })
        .await?;
        if change.added && super::meta::announced(&uri) {
            let created = change
                .created
                .then(|| self.shared.broker.group(group))
                .flatten()
                .map(|g| g.to_dict(group));
            let added = Change::Added { created };
            let realm = &self.info.realm;
            announce_change(
                &self.shared,
                realm,
                Kind::Subscription,
                self.id,
                group,
                added,
            )
            .await;
        }
        // fox-wamp's `snapshot` and `retainedState` are WAMP's `get_retained`.
        let snapshot = ["get_retained", "snapshot", "retainedState"]
            .iter()
            .any(|key| flag(&options, key));
        if snapshot || retained_only {
            for (id, message) in subscribed.retained {
                let delivery = Delivery {
                    id,
                    message,
                    matches: vec![(sub, 0)],
                };
                self.send_event(&delivery, true).await?;
            }
        }
        if let Some(after) = after {
            self.replay(sub, &filter, after, subscribed.last_dispatched)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn unsubscribe(
        &mut self,
        request: u64,
        group: u64,
    ) -> Result<(), SessionError> {
        let Some(sub) = self.groups.remove(&group) else {
            let reply = error(
                code::UNSUBSCRIBE,
                request,
                "wamp.error.no_such_subscription",
            );
            return self.feed(&reply).await;
        };
        self.subscriptions.remove(&sub);
        self.filters.remove(&sub);
        self.retained_only.remove(&sub);
        self.shared.router.unsubscribe(self.id, sub);
        let removed = self.shared.broker.unsubscribe(self.id, group);
        self.feed(&Message::Unsubscribed {
            request,
            details: Dict::new(),
        })
        .await?;
        if let Some(removed) = removed.filter(|r| super::meta::announced(&r.uri)) {
            let change = Change::Removed {
                deleted: removed.deleted,
            };
            let realm = &self.info.realm;
            announce_change(
                &self.shared,
                realm,
                Kind::Subscription,
                self.id,
                group,
                change,
            )
            .await;
        }
        Ok(())
    }

    /// Send one EVENT per matched subscription, unless the publication's
    /// black/whitelists exclude this session.
    pub(super) async fn send_event(
        &mut self,
        d: &Delivery,
        retained: bool,
    ) -> Result<(), SessionError> {
        let options = d.message.wamp.as_ref();
        if options.is_some_and(|o| !o.admits(self.id, &self.info.authid, &self.info.authrole)) {
            return Ok(());
        }
        // A pattern is authorized on its string at SUBSCRIBE; the topic it matched
        // may sit under a prefix the user may not subscribe to.
        if self.grant.permissions.is_some()
            && !self.grant.allows(
                &self.info.realm,
                &topic::to_wamp_uri(&d.message.topic),
                Action::Subscribe,
            )
        {
            return Ok(());
        }
        let (args, kwargs) = d.message.payload.to_wamp_args();
        let mut value = None;
        for (sub, _) in &d.matches {
            let Some(&(group, pattern)) = self.subscriptions.get(sub) else {
                continue;
            };
            if !retained && !d.message.retain && self.retained_only.contains(sub) {
                continue;
            }
            if let Some(filter) = self.filters.get(sub) {
                let value = value.get_or_insert_with(|| kv::value_of(&d.message.payload));
                if !kv::fits(filter, value) {
                    continue;
                }
            }
            let details = event_details(&d.message, pattern, retained);
            let event = Message::Event {
                subscription: group,
                publication: d.id.0,
                details,
                args: args.clone(),
                kwargs: kwargs.clone(),
            };
            self.feed(&event).await?;
        }
        Ok(())
    }

    /// Send stored events in `(after, upto]` matching the filter; live ones follow from the queue.
    async fn replay(
        &mut self,
        sub: SubscriptionId,
        filter: &Filter,
        mut after: PermanentId,
        upto: PermanentId,
    ) -> Result<(), SessionError> {
        while after < upto {
            let chunk = self.read_log(after, upto, REPLAY_CHUNK).await?;
            let Some(&(last, _)) = chunk.last() else {
                break;
            };
            for (id, message) in chunk {
                if message.realm != self.info.realm
                    || !filter.matches(&message.topic)
                    || (message.exclude_publisher && message.publisher == self.id)
                    || !self.shared.router.replayable(id, &message)
                {
                    continue;
                }
                let delivery = Delivery {
                    id,
                    message: Arc::new(message),
                    matches: vec![(sub, 0)],
                };
                self.send_event(&delivery, false).await?;
            }
            self.tx.flush().await?;
            after = last;
        }
        Ok(())
    }

    async fn read_log(
        &mut self,
        after: PermanentId,
        upto: PermanentId,
        limit: usize,
    ) -> Result<Vec<(PermanentId, StoredMessage)>, SessionError> {
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || store.read_range(after, upto, limit))
            .await
            .map_err(|e| SessionError::Replay(e.to_string()))?
            .map_err(|e| SessionError::Replay(e.to_string()))
    }

    /// Return the last `limit` events of a subscription, oldest first, looking
    /// back at most [`HISTORY_WINDOW`] messages in the log. Events whose
    /// black/whitelists exclude this session are left out.
    pub(super) async fn history(
        &mut self,
        group: u64,
        limit: usize,
    ) -> Result<Option<Vec<Value>>, SessionError> {
        let Some(g) = self.shared.broker.group(group) else {
            return Ok(None);
        };
        let Some(filter) = g.filter() else {
            return Ok(None);
        };
        let upto = self.shared.router.last_dispatched();
        let mut after = PermanentId(upto.0.saturating_sub(HISTORY_WINDOW));
        let mut found: std::collections::VecDeque<Value> = Default::default();
        while after < upto {
            let chunk = self.read_log(after, upto, REPLAY_CHUNK).await?;
            let Some(&(last, _)) = chunk.last() else {
                break;
            };
            for (id, message) in chunk {
                let hidden = message
                    .wamp
                    .as_ref()
                    .is_some_and(|o| !o.admits(self.id, &self.info.authid, &self.info.authrole));
                if message.realm != g.realm
                    || !filter.matches(&message.topic)
                    || hidden
                    || !self.shared.router.replayable(id, &message)
                {
                    continue;
                }
                found.push_back(history_entry(group, id, &message));
                if found.len() > limit {
                    found.pop_front();
                }
            }
            after = last;
        }
        Ok(Some(found.into_iter().collect()))
    }
}

fn event_details(message: &StoredMessage, pattern: bool, retained: bool) -> Dict {
    let mut details = Dict::new();
    if pattern {
        details.insert(
            "topic".into(),
            Value::from(topic::to_wamp_uri(&message.topic)),
        );
    }
    if let Some(who) = message.wamp.as_ref().and_then(|o| o.disclose.as_ref()) {
        details.insert("publisher".into(), Value::from(who.session));
        details.insert("publisher_authid".into(), Value::from(who.authid.as_str()));
        details.insert(
            "publisher_authrole".into(),
            Value::from(who.authrole.as_str()),
        );
    }
    if retained {
        details.insert("retained".into(), Value::Boolean(true));
    }
    details
}

/// One event as `wamp.subscription.get_events` lists it.
fn history_entry(group: u64, id: PermanentId, message: &StoredMessage) -> Value {
    let (args, kwargs) = message.payload.to_wamp_args();
    let mut d = Dict::new();
    d.insert("subscription".into(), Value::from(group));
    d.insert("publication".into(), Value::from(id.0));
    d.insert(
        "topic".into(),
        Value::from(topic::to_wamp_uri(&message.topic)),
    );
    d.insert("args".into(), Value::Array(args));
    d.insert("kwargs".into(), ordo_common::wamp::dict_to_value(kwargs));
    ordo_common::wamp::dict_to_value(d)
}
