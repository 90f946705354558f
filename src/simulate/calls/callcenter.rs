//! Contact-center traffic: mod_callcenter's `callcenter::info` events for one queued call, and
//! the engine's own `engine::dialer_member_end`.

use rand::RngExt;
use serde_json::Value;

use super::Switch;
use super::channel::{Builder, Leg, Origin, Phase, Profile, Times};
use super::data::{DIALER_END_CAUSES, DIALER_NAMES, MEMBER_NAMES};
use super::vars::{Call, Target, inbound_leg};
use crate::event::Event;

const CALLCENTER: &str = "callcenter::info";

const fn cc_origin(function: &'static str, line: u32) -> Origin {
    Origin { name: "CUSTOM", subclass: Some(CALLCENTER), file: "mod_callcenter.c", function, line }
}

const QUEUE_START: Origin = cc_origin("callcenter_function", 3111);
const AGENT_THREAD: Origin = cc_origin("outbound_agent_thread_run", 1903);
const AGENT_UPDATE: Origin = cc_origin("cc_agent_update", 1260);

/// One caller queued and answered by an agent: what its events refer to.
struct QueuedCall {
    call: Call,
    member: Leg,
    agent: Leg,
    queue: String,
    member_uuid: String,
    agent_name: String,
    joined: i64,
    offered: i64,
    answered: i64,
    ended: i64,
}

/// One `callcenter::info` event: where it fires from, when, whose channel data it carries (if
/// any), and its `CC-*` headers.
type Step<'a> = (&'a Origin, i64, Option<(&'a Leg, Phase)>, &'a [Cc]);

/// Groups of `CC-*` headers, in the order mod_callcenter adds them.
#[derive(Clone, Copy)]
enum Cc {
    Queue,
    Action(&'static str),
    AgentName,
    AgentState(&'static str),
    HangupCause,
    Agent,
    BridgeTimes,
    Terminated,
    Leaving,
    Member,
}

impl QueuedCall {
    fn headers(&self, blocks: &[Cc]) -> Vec<(&'static str, String)> {
        let secs = |us: i64| (us / 1_000_000).to_string();
        let mut out = Vec::with_capacity(16);
        for block in blocks {
            match *block {
                Cc::Queue => out.push(("CC-Queue", self.queue.clone())),
                Cc::Action(action) => out.push(("CC-Action", action.to_owned())),
                Cc::AgentName => out.push(("CC-Agent", self.agent_name.clone())),
                Cc::AgentState(state) => out.push(("CC-Agent-State", state.to_owned())),
                Cc::HangupCause => out.push(("CC-Hangup-Cause", self.call.cause.name.to_owned())),
                Cc::Agent => {
                    out.extend([("CC-Agent", self.agent_name.clone()), ("CC-Agent-System", "single_box".to_owned())])
                }
                Cc::BridgeTimes => out.extend([
                    ("CC-Agent-UUID", self.agent.uuid.clone()),
                    ("CC-Agent-Called-Time", secs(self.offered)),
                    ("CC-Agent-Answered-Time", secs(self.answered)),
                    ("CC-Member-Joined-Time", secs(self.joined)),
                ]),
                Cc::Terminated => out.push(("CC-Bridge-Terminated-Time", secs(self.ended))),
                Cc::Leaving => out.extend([
                    ("CC-Cause", "Terminated".to_owned()),
                    ("CC-Agent-Called-Time", secs(self.offered)),
                    ("CC-Agent-Answered-Time", secs(self.answered)),
                    ("CC-Member-Joined-Time", secs(self.joined)),
                    ("CC-Member-Leaving-Time", secs(self.ended)),
                ]),
                Cc::Member => out.extend([
                    ("CC-Member-UUID", self.member_uuid.clone()),
                    ("CC-Member-Session-UUID", self.call.a_uuid.clone()),
                    ("CC-Member-CID-Name", self.call.caller.name.clone()),
                    ("CC-Member-CID-Number", self.call.caller.number.clone()),
                ]),
            }
        }
        out
    }
}

impl Switch {
    /// The `callcenter::info` events of one caller queued in `support@<domain>` and answered by
    /// an agent, in order: member-queue-start, agent-offering, bridge-agent-start,
    /// agent-state-change, bridge-agent-end, member-queue-end, agent-state-change.
    ///
    /// Member and bridge events carry the member's or the agent's channel data, hence
    /// `Channel-Presence-ID` and `variable_domain_name`. mod_callcenter's agent-state-change
    /// carries no channel data at all; here it gets `variable_domain_name` so it can be routed
    /// to a domain like every other simulated event.
    pub fn callcenter_info(&mut self) -> Vec<Event> {
        use Cc::*;
        let q = self.plan_queued_call();
        let (member, agent) = (Some((&q.member, Phase::Answer)), Some((&q.agent, Phase::Answer)));
        let steps: [Step; 7] = [
            (&QUEUE_START, q.joined, member, &[Queue, Action("member-queue-start"), Member]),
            (&AGENT_THREAD, q.offered, member, &[Queue, Action("agent-offering"), Agent, Member]),
            (&AGENT_THREAD, q.answered, agent, &[Queue, Action("bridge-agent-start"), Agent, BridgeTimes, Member]),
            (
                &AGENT_UPDATE,
                q.answered + 1_000,
                None,
                &[AgentName, Action("agent-state-change"), AgentState("In a queue call")],
            ),
            (
                &AGENT_THREAD,
                q.ended,
                Some((&q.agent, Phase::Hangup)),
                &[Queue, Action("bridge-agent-end"), HangupCause, Agent, BridgeTimes, Terminated, Member],
            ),
            (
                &AGENT_THREAD,
                q.ended + 2_000,
                Some((&q.member, Phase::Hangup)),
                &[Queue, Action("member-queue-end"), HangupCause, Leaving, Agent, Member],
            ),
            (
                &AGENT_UPDATE,
                q.ended + 10_000_000,
                None,
                &[AgentName, Action("agent-state-change"), AgentState("Waiting")],
            ),
        ];
        let mut events: Vec<Event> = steps
            .iter()
            .map(|&(origin, now, leg, blocks)| {
                let headers = q.headers(blocks);
                let capacity = leg.map_or(20, |(leg, phase)| leg.headers_at(phase)) + headers.len();
                let mut b = Builder::new(origin, &self.info, now, capacity);
                match leg {
                    Some((leg, phase)) => leg.write(&mut b, phase, now),
                    None => b.put("variable_domain_name", q.call.domain.as_str()),
                }
                for (name, value) in headers {
                    b.put(name, value);
                }
                b.finish()
            })
            .collect();
        for event in &mut events {
            self.emit(event);
        }
        events
    }

    /// A customer from outside calls queue 7000, is answered by the queue within a second, waits
    /// 2–60 s, is offered to an agent who answers within 10 s and talks 10 s – 5 min.
    fn plan_queued_call(&mut self) -> QueuedCall {
        let domain = self.random_domain();
        let queue = format!("support@{domain}");
        let member_uuid = self.uuid();
        let caller = self.party(false);
        let created = self.clock_us;
        let progress = created + self.rng.random_range(50_000..150_000);
        let answered = progress + self.rng.random_range(200_000..600_000);
        let joined = answered + 40_000;
        let offered = joined + self.rng.random_range(2_000_000..60_000_000);
        let agent_answered = offered + self.rng.random_range(2_000_000..10_000_000);
        let ended = agent_answered + self.rng.random_range(10_000_000..300_000_000);
        let times = Times { created, progress, answered, bridged: agent_answered, hangup: ended };
        let target = Target::Queue { queue: queue.clone(), member_uuid: member_uuid.clone() };
        let call = self.plan(domain.clone(), caller, "7000".to_owned(), target, times);
        let agent_ext = self.extension();
        let agent_uuid = self.uuid();
        QueuedCall {
            member: inbound_leg(&call),
            agent: agent_leg(&call, &agent_ext, &agent_uuid, offered, agent_answered, ended),
            call,
            queue,
            member_uuid,
            agent_name: format!("{agent_ext}@{domain}"),
            joined,
            offered,
            answered: agent_answered,
            ended,
        }
    }

    /// The engine's `engine::dialer_member_end`, exactly as it publishes it: JSON with a numeric
    /// `currentProbe`, 24-hex ids, then the member's variables as `variable_<name>`.
    pub fn dialer_member_end(&mut self) -> Event {
        let domain = self.random_domain();
        let agent = format!("{}@{domain}", self.extension());
        let headers: [(&str, Value); 16] = [
            ("Event-Name", "CUSTOM".into()),
            ("Event-Subclass", "engine::dialer_member_end".into()),
            ("variable_domain_name", domain.into()),
            ("dialerId", self.object_id().into()),
            ("dialerName", self.pick(&DIALER_NAMES).into()),
            ("id", self.object_id().into()),
            ("name", self.pick(&MEMBER_NAMES).into()),
            ("currentNumber", self.phone().into()),
            ("dlr_member_number_description", "".into()),
            ("currentProbe", self.rng.random_range(1..=5u32).into()),
            ("session", self.uuid().into()),
            ("endCause", self.pick(&DIALER_END_CAUSES).into()),
            ("agentId", agent.into()),
            ("variable_crm_id", format!("CRM-{:06}", self.rng.random_range(0..1_000_000u32)).into()),
            ("variable_city", self.pick(&["Kyiv", "Львів", "Odesa", "São Paulo"]).into()),
            ("variable_note", self.pick(&["", "call after 18:00", "prefers \"Mr.\" form"]).into()),
        ];
        Event(headers.into_iter().map(|(name, value)| (name.to_owned(), value)).collect())
    }

    /// A MongoDB ObjectId-like id: 4 bytes of (simulated) seconds, then 8 random bytes.
    fn object_id(&mut self) -> String {
        let secs = (self.clock_us / 1_000_000) as u32;
        let tail: u64 = self.rng.random();
        format!("{secs:08x}{tail:016x}")
    }
}

/// The agent's leg: originated by mod_callcenter towards the agent's extension.
fn agent_leg(member: &Call, ext: &str, uuid: &str, created: i64, answered: i64, ended: i64) -> Leg {
    let domain = &member.domain;
    let (ip, port) = ("192.168.10.31", 5066);
    let channel_name = format!("sofia/internal/{ext}@{ip}:{port}");
    let times = Times { created, progress: created + 150_000, answered, bridged: answered, hangup: ended };
    let caller = Profile {
        direction: "outbound",
        logical_direction: "outbound",
        username: member.caller.number.clone(),
        cid_name: member.caller.name.clone(),
        cid_number: member.caller.number.clone(),
        callee: Some(("Outbound Call".to_owned(), ext.to_owned())),
        network_addr: ip.to_owned(),
        destination: ext.to_owned(),
        uuid: uuid.to_owned(),
        context: "default",
        channel_name: channel_name.clone(),
        times,
    };
    let other = Profile {
        direction: "inbound",
        logical_direction: "inbound",
        callee: None,
        network_addr: member.caller.ip.clone(),
        destination: member.dest.clone(),
        uuid: member.a_uuid.clone(),
        context: "public",
        channel_name: format!("sofia/external/{}@{}", member.caller.number, member.caller.ip),
        times: member.times,
        ..caller.clone()
    };
    let mut leg = Leg {
        uuid: uuid.to_owned(),
        direction: "outbound",
        channel_name: channel_name.clone(),
        call_uuid: member.a_uuid.clone(),
        hit_dialplan: false,
        presence_id: format!("{ext}@{domain}"),
        presence_data: domain.clone(),
        codec: member.codec,
        caller,
        other: Some(other),
        hangup_cause: member.cause.name,
        vars: Vec::with_capacity(48),
    };
    let create = Phase::Create;
    let codec = member.codec;
    let queue = match &member.target {
        Target::Queue { queue, .. } => queue.as_str(),
        _ => "",
    };
    let fixed: [(&'static str, String); 24] = [
        ("variable_direction", "outbound".into()),
        ("variable_is_outbound", "true".into()),
        ("variable_uuid", uuid.into()),
        ("variable_session_id", (member.session_id + 1).to_string()),
        ("variable_sip_profile_name", "internal".into()),
        ("variable_channel_name", channel_name.clone()),
        ("variable_sip_destination_url", format!("sip:{ext}@{ip}:{port}")),
        ("variable_max_forwards", "69".into()),
        ("variable_originator_codec", format!("{}@{}h@20i", codec.name, codec.rate)),
        ("variable_originator", member.a_uuid.clone()),
        ("variable_cc_queue", queue.into()),
        ("variable_cc_agent", format!("{ext}@{domain}")),
        ("variable_cc_side", "agent".into()),
        ("variable_domain_name", domain.clone()),
        ("variable_presence_id", format!("{ext}@{domain}")),
        ("variable_originate_early_media", "true".into()),
        ("variable_originating_leg_uuid", member.a_uuid.clone()),
        ("variable_originate_endpoint", "sofia".into()),
        ("variable_call_uuid", member.a_uuid.clone()),
        ("variable_local_media_ip", member.switch_ip.clone()),
        ("variable_advertised_media_ip", member.switch_ip.clone()),
        ("variable_sip_req_uri", format!("{ext}@{ip}:{port}")),
        ("variable_sip_to_host", ip.into()),
        ("variable_sofia_profile_name", "internal".into()),
    ];
    for (name, value) in fixed {
        leg.var(create, name, value);
    }
    leg.var(Phase::Answer, "variable_endpoint_disposition", "ANSWER");
    leg.var(Phase::Answer, "variable_signal_bond", member.a_uuid.as_str());
    leg.var(Phase::Answer, "variable_read_codec", codec.name);
    leg.var(Phase::Answer, "variable_write_codec", codec.name);
    leg.var(Phase::Hangup, "variable_hangup_cause", member.cause.name);
    leg.var(Phase::Hangup, "variable_hangup_cause_q850", member.cause.q850.to_string());
    leg
}
