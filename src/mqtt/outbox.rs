//! What should be on the broker: the latest payload of every topic Vigil publishes, and which of
//! them still have to be handed to the MQTT client.
//!
//! A topic is held once, with its newest payload, so a broker that is down or slow never makes
//! states pile up: memory is one entry per topic, whatever happens. After a (re)connect or Home
//! Assistant's birth message everything is queued again. Pure bookkeeping: sending is the
//! caller's closure.
//!
//! Events (Home Assistant's `event` entities) are the exception: each one is sent once, never
//! retained and never again after a reconnect, since a replayed event would fire automations a
//! second time. They wait in a short queue of their own, and one that could not be sent within
//! [`EVENT_FRESH_FOR`] is dropped: a cry announced minutes late would only mislead.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How long an event may wait for the broker before it is dropped as stale.
pub const EVENT_FRESH_FOR: Duration = Duration::from_secs(30);
/// Events waiting at most; the oldest goes first when more come.
pub const MAX_EVENTS: usize = 16;

/// One message as it should stand on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub payload: String,
    pub retain: bool,
    /// Sent once and then forgotten (the removal of an old retained topic), instead of sent
    /// again after every reconnect.
    pub once: bool,
}

/// The client's request queue was full: try again shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

#[derive(Debug, Default)]
pub struct Outbox {
    latest: HashMap<String, Message>,
    /// Topics to send, oldest change first; each at most once.
    queue: VecDeque<String>,
    queued: HashSet<String>,
    /// Events to send once, oldest first, with the moment each happened.
    events: VecDeque<(Instant, String, Message)>,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a retained topic's payload; queues it if it changed.
    pub fn set(&mut self, topic: &str, payload: impl Into<String>) {
        self.put(
            topic,
            Message {
                payload: payload.into(),
                retain: true,
                once: false,
            },
        );
    }

    /// Queues an empty retained message for `topic` (which deletes it on the broker), sent once.
    pub fn remove(&mut self, topic: &str) {
        self.put(
            topic,
            Message {
                payload: String::new(),
                retain: true,
                once: true,
            },
        );
    }

    /// Queues an event: sent once, not retained, dropped if still unsent after
    /// [`EVENT_FRESH_FOR`].
    pub fn push_event(&mut self, topic: &str, payload: impl Into<String>, now: Instant) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        let message = Message {
            payload: payload.into(),
            retain: false,
            once: true,
        };
        self.events.push_back((now, topic.to_string(), message));
    }

    /// Hands waiting events to `send`, oldest first, after dropping the stale ones; stops at a
    /// full client queue (what was not sent stays queued).
    pub fn flush_events(
        &mut self,
        now: Instant,
        mut send: impl FnMut(&str, &Message) -> Result<(), QueueFull>,
    ) -> Result<(), QueueFull> {
        while let Some((at, topic, message)) = self.events.front() {
            if now.saturating_duration_since(*at) <= EVENT_FRESH_FOR {
                send(topic, message)?;
            } else {
                tracing::debug!(topic, "dropping an event the broker did not take in time");
            }
            self.events.pop_front();
        }
        Ok(())
    }

    /// The payload `topic` should have, if Vigil publishes it.
    #[cfg(test)]
    pub fn get(&self, topic: &str) -> Option<&str> {
        self.latest.get(topic).map(|m| m.payload.as_str())
    }

    /// True when `topic` is one Vigil keeps (not a one-off removal).
    pub fn holds(&self, topic: &str) -> bool {
        self.latest.get(topic).is_some_and(|m| !m.once)
    }

    fn put(&mut self, topic: &str, message: Message) {
        if self.latest.get(topic) == Some(&message) {
            return;
        }
        self.latest.insert(topic.to_string(), message);
        self.enqueue(topic);
    }

    /// Queues `topic` again (its payload is unchanged), for instance to restore a retained
    /// value someone else overwrote.
    pub fn resend(&mut self, topic: &str) {
        if self.latest.contains_key(topic) {
            self.enqueue(topic);
        }
    }

    /// Queues every topic again: after a (re)connect, or when Home Assistant comes online.
    /// `first` come first (the availability topic), then the rest in a stable order.
    pub fn resend_all(&mut self, first: &[&str]) {
        self.queue.clear();
        self.queued.clear();
        for topic in first {
            self.resend(topic);
        }
        let mut rest: Vec<&String> = self.latest.keys().collect();
        rest.sort();
        let rest: Vec<String> = rest.into_iter().cloned().collect();
        for topic in rest {
            self.enqueue(&topic);
        }
    }

    /// How many topics wait to be sent.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// Hands queued messages to `send` in order, until the queue is empty or `send` reports a
    /// full client queue (what was not sent stays queued).
    pub fn flush(
        &mut self,
        mut send: impl FnMut(&str, &Message) -> Result<(), QueueFull>,
    ) -> Result<(), QueueFull> {
        while let Some(topic) = self.queue.front() {
            let Some(message) = self.latest.get(topic) else {
                self.dequeue();
                continue;
            };
            send(topic, message)?;
            if message.once {
                let topic = topic.clone();
                self.latest.remove(&topic);
            }
            self.dequeue();
        }
        Ok(())
    }

    fn enqueue(&mut self, topic: &str) {
        if self.queued.insert(topic.to_string()) {
            self.queue.push_back(topic.to_string());
        }
    }

    fn dequeue(&mut self) {
        if let Some(topic) = self.queue.pop_front() {
            self.queued.remove(&topic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(outbox: &mut Outbox) -> Vec<(String, String)> {
        let mut out = Vec::new();
        outbox
            .flush(|t, m| {
                out.push((t.to_string(), m.payload.clone()));
                Ok(())
            })
            .unwrap();
        out
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect()
    }

    #[test]
    fn only_the_latest_payload_of_a_topic_is_sent() {
        let mut o = Outbox::new();
        for i in 0..10_000 {
            o.set("vigil/a/crying", if i % 2 == 0 { "ON" } else { "OFF" });
            o.set("vigil/a/cry_score", i.to_string());
        }
        assert_eq!(o.waiting(), 2);
        assert_eq!(
            sent(&mut o),
            pairs(&[("vigil/a/crying", "OFF"), ("vigil/a/cry_score", "9999")])
        );
        // Unchanged values are not sent again.
        o.set("vigil/a/crying", "OFF");
        assert!(sent(&mut o).is_empty());
    }

    #[test]
    fn a_full_queue_keeps_the_rest_for_later() {
        let mut o = Outbox::new();
        o.set("a", "1");
        o.set("b", "2");
        let mut n = 0;
        let r = o.flush(|_, _| {
            n += 1;
            if n > 1 { Err(QueueFull) } else { Ok(()) }
        });
        assert_eq!(r, Err(QueueFull));
        assert_eq!(sent(&mut o), pairs(&[("b", "2")]));
    }

    #[test]
    fn events_go_once_in_order_and_stale_ones_are_dropped() {
        let mut o = Outbox::new();
        let t0 = Instant::now();
        let sent_events = |o: &mut Outbox, now: Instant| {
            let mut out = Vec::new();
            o.flush_events(now, |t, m| {
                assert!(!m.retain, "an event is never retained");
                out.push((t.to_string(), m.payload.clone()));
                Ok(())
            })
            .unwrap();
            out
        };
        o.set("vigil/a/crying", "ON");
        o.push_event("vigil/a/cry", "started", t0);
        o.push_event("vigil/a/cry", "ended", t0);
        // Two events of one topic are two messages, unlike states.
        assert_eq!(
            sent_events(&mut o, t0),
            pairs(&[("vigil/a/cry", "started"), ("vigil/a/cry", "ended")])
        );
        // A reconnect sends the states again, never an event.
        o.resend_all(&[]);
        assert_eq!(sent(&mut o), pairs(&[("vigil/a/crying", "ON")]));
        assert!(sent_events(&mut o, t0).is_empty());
        // Offline too long: the event is dropped, not announced late.
        o.push_event("vigil/a/cry", "late", t0);
        assert!(sent_events(&mut o, t0 + EVENT_FRESH_FOR + Duration::from_secs(1)).is_empty());
        // A full client queue keeps it for the next try.
        o.push_event("vigil/a/cry", "retry", t0);
        assert_eq!(o.flush_events(t0, |_, _| Err(QueueFull)), Err(QueueFull));
        assert_eq!(sent_events(&mut o, t0), pairs(&[("vigil/a/cry", "retry")]));
        // Bounded.
        for i in 0..MAX_EVENTS + 5 {
            o.push_event("vigil/a/cry", i.to_string(), t0);
        }
        let kept = sent_events(&mut o, t0);
        assert_eq!(kept.len(), MAX_EVENTS);
        assert_eq!(kept[0].1, "5");
    }

    #[test]
    fn a_reconnect_sends_everything_again_but_removals_only_once() {
        let mut o = Outbox::new();
        o.set("vigil/status", "online");
        o.set("b", "2");
        o.set("a", "1");
        o.remove("old/config");
        assert_eq!(sent(&mut o).len(), 4);
        assert!(!o.holds("old/config"));
        o.resend_all(&["vigil/status"]);
        assert_eq!(
            sent(&mut o),
            pairs(&[("vigil/status", "online"), ("a", "1"), ("b", "2")])
        );
    }
}
