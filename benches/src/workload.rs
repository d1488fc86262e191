//! A deterministic stream of producer-shaped events from several tenants and agents: each event
//! comes from a random agent, which publishes the scenes of its phone in order.

use std::fmt;
use std::str::FromStr;

use wa_shared::model::TenantId;

use crate::agent::Agent;
use crate::event::Event;
use crate::rng::Rng;

/// Which subjects a workload publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// The seven realtime subjects.
    Realtime,
    /// The three history subjects (syncs of up to 100-item batches).
    History,
    /// Realtime, with an occasional history sync (2 % of scenes).
    All,
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "realtime" => Ok(Mix::Realtime),
            "history" => Ok(Mix::History),
            "all" => Ok(Mix::All),
            _ => Err(format!("{s:?}: expected realtime, history or all")),
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mix::Realtime => "realtime",
            Mix::History => "history",
            Mix::All => "all",
        })
    }
}

/// The shape of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadSettings {
    pub tenants: usize,
    pub agents_per_tenant: usize,
    /// Company ids are the prefix and a 3-digit number: `LOAD001`, `LOAD002`…
    pub company_prefix: String,
    pub mix: Mix,
    pub seed: u64,
}

/// The events of every agent of every tenant, interleaved.
pub struct Workload {
    agents: Vec<Agent>,
    companies: Vec<String>,
    rng: Rng,
    mix: Mix,
}

impl Workload {
    pub fn new(settings: &WorkloadSettings) -> Result<Self, String> {
        if settings.tenants == 0 || settings.agents_per_tenant == 0 {
            return Err("a workload needs at least one tenant and one agent".into());
        }
        let rng = Rng::new(settings.seed);
        let mut companies = Vec::with_capacity(settings.tenants);
        let mut agents = Vec::new();
        for t in 1..=settings.tenants {
            let company = format!("{}{t:03}", settings.company_prefix);
            TenantId::parse(&company).map_err(|e| e.to_string())?;
            for a in 1..=settings.agents_per_tenant {
                let agent_id = format!("AGT{t:03}{a:02}");
                let stream = (t * settings.agents_per_tenant + a) as u64;
                agents.push(Agent::new(&company, agent_id, rng.fork(stream)));
            }
            companies.push(company);
        }
        Ok(Workload {
            agents,
            companies,
            rng,
            mix: settings.mix,
        })
    }

    /// The tenants events are published for.
    pub fn companies(&self) -> &[String] {
        &self.companies
    }

    pub fn next_event(&mut self) -> Event {
        let i = self.rng.below(self.agents.len() as u64) as usize;
        let mix = self.mix;
        self.agents[i].next_event(|agent| match mix {
            Mix::Realtime => agent.realtime_scene(),
            Mix::History => agent.history_sync(),
            Mix::All if !agent.status.is_empty() && agent.rng.chance(0.02) => agent.history_sync(),
            Mix::All => agent.realtime_scene(),
        })
    }
}

impl Iterator for Workload {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        Some(self.next_event())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use bytes::Bytes;
    use wa_shared::model::{decode, EventKind, Payload, Subject};

    use super::*;

    fn workload(mix: Mix, seed: u64) -> Workload {
        Workload::new(&WorkloadSettings {
            tenants: 2,
            agents_per_tenant: 3,
            company_prefix: "LOAD".into(),
            mix,
            seed,
        })
        .unwrap()
    }

    #[test]
    fn every_event_is_valid_for_the_core() {
        for mix in [Mix::Realtime, Mix::History, Mix::All] {
            let mut kinds = HashSet::new();
            for event in workload(mix, 7).take(3000) {
                let subject = Subject::parse(&event.subject).unwrap();
                assert_eq!(subject.kind, event.kind);
                let payload = decode(&subject, &event.body, 1024 * 1024)
                    .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&event.body)));
                if let Payload::History(items) = payload {
                    assert!(!items.is_empty() && items.len() <= 100);
                    assert!(items.iter().all(Result::is_ok));
                }
                kinds.insert(event.kind);
            }
            let expected = match mix {
                Mix::Realtime => 7,
                Mix::History => 3,
                Mix::All => 10,
            };
            assert_eq!(kinds.len(), expected, "{mix}: {kinds:?}");
        }
    }

    #[test]
    fn the_same_seed_publishes_the_same_events() {
        let a: Vec<Bytes> = workload(Mix::All, 3).take(500).map(|e| e.body).collect();
        let b: Vec<Bytes> = workload(Mix::All, 3).take(500).map(|e| e.body).collect();
        let c: Vec<Bytes> = workload(Mix::All, 4).take(500).map(|e| e.body).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn receipts_follow_their_message_and_new_chats_start_with_an_update() {
        let mut messages = HashSet::new();
        let mut chats = HashSet::new();
        let mut receipts = 0;
        for event in workload(Mix::Realtime, 11).take(5000) {
            let body: serde_json::Value = serde_json::from_slice(&event.body).unwrap();
            let field = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
            match event.kind {
                EventKind::MessageUpsert => {
                    assert!(chats.contains(&field("chat_id")), "{body}");
                    messages.insert(field("message_id"));
                }
                EventKind::MessageUpdate => {
                    assert!(messages.contains(&field("message_id")), "{body}");
                    receipts += body.get("status").is_some() as usize;
                }
                EventKind::ChatUpdate | EventKind::ChatUpsert => {
                    chats.insert(field("chat_id"));
                }
                _ => {}
            }
        }
        assert!(receipts > 100);
    }
}
