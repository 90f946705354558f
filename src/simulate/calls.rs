//! A deterministic simulated FreeSWITCH 1.10 switch: call flows, mod_callcenter events and the
//! contact-center engine's `dialer_member_end`, with the headers real dumps carry.
//!
//! Everything is drawn from one seeded RNG and a simulated clock, so a seed always yields the
//! same events, byte for byte.

mod callcenter;
mod cdr;
mod channel;
mod data;
mod vars;

use rand::rngs::Xoshiro256PlusPlus;
use rand::{Rng, RngExt, SeedableRng};

use self::channel::{Builder, Origin, Phase, SwitchInfo, Times, origin};
use self::data::{ANSWERED_CAUSES, CALLER_NAMES, CODECS, EPOCH_START_US, USER_AGENTS};
use self::vars::{Call, Party, Target, inbound_leg};
use crate::event::Event;

/// The events of one call, in the order FreeSWITCH emits them for its A-leg.
pub const CALL_EVENTS: [&str; 7] = [
    "CHANNEL_CREATE",
    "CHANNEL_PROGRESS",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_DESTROY",
];

const PHASES: [(Phase, Origin); 7] = [
    (Phase::Create, origin("CHANNEL_CREATE", "switch_core_state_machine.c", "switch_core_session_run", 626)),
    (
        Phase::Progress,
        origin("CHANNEL_PROGRESS", "switch_channel.c", "switch_channel_perform_mark_ring_ready_value", 3708),
    ),
    (Phase::Answer, origin("CHANNEL_ANSWER", "switch_channel.c", "switch_channel_perform_mark_answered", 3939)),
    (Phase::Bridge, origin("CHANNEL_BRIDGE", "switch_ivr_bridge.c", "switch_ivr_multi_threaded_bridge", 1674)),
    (Phase::Hangup, origin("CHANNEL_HANGUP", "switch_channel.c", "switch_channel_perform_hangup", 3497)),
    (
        Phase::Complete,
        origin("CHANNEL_HANGUP_COMPLETE", "switch_core_state_machine.c", "switch_core_session_reporting_state", 951),
    ),
    (Phase::Destroy, origin("CHANNEL_DESTROY", "switch_core_session.c", "switch_core_session_perform_destroy", 1741)),
];

/// `domain-1.example.com` … `domain-<n>.example.com`.
pub fn domain_names(n: usize) -> Vec<String> {
    (1..=n).map(|k| format!("domain-{k}.example.com")).collect()
}

/// One simulated switch: its identity, clock and `Event-Sequence` counter.
pub struct Switch {
    rng: Xoshiro256PlusPlus,
    info: SwitchInfo,
    domains: Vec<String>,
    /// Last `Event-Sequence` handed out; strictly increasing over everything this switch emits.
    sequence: u64,
    /// Simulated time in microseconds: when the next call starts.
    clock_us: i64,
    session_id: u64,
    /// Calls started so far; also picks each call's domain, round robin.
    started: usize,
}

impl Switch {
    /// A switch whose calls are spread over `domains`, round robin.
    ///
    /// # Panics
    /// When `domains` is empty: every simulated call needs a domain.
    pub fn new(seed: u64, domains: Vec<String>) -> Self {
        assert!(!domains.is_empty(), "a simulated switch needs at least one domain");
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let core_uuid = uuid_v4(&mut rng);
        let ipv4 = format!("10.20.{}.{}", rng.random_range(0..=255u8), rng.random_range(2..=254u8));
        let clock_us = EPOCH_START_US + rng.random_range(0..1_000_000i64);
        Switch {
            rng,
            info: SwitchInfo {
                core_uuid,
                hostname: "fs-01.example.com".to_owned(),
                switchname: "fs-01".to_owned(),
                ipv4,
                ipv6: "::1".to_owned(),
            },
            domains,
            sequence: 0,
            clock_us,
            session_id: 0,
            started: 0,
        }
    }

    /// Names the switch (`FreeSWITCH-Hostname`; `FreeSWITCH-Switchname` is its first label).
    pub fn with_hostname(mut self, hostname: &str) -> Self {
        self.info.hostname = hostname.to_owned();
        self.info.switchname = hostname.split('.').next().unwrap_or(hostname).to_owned();
        self
    }

    pub fn core_uuid(&self) -> &str {
        &self.info.core_uuid
    }

    pub fn hostname(&self) -> &str {
        &self.info.hostname
    }

    pub fn domains(&self) -> &[String] {
        &self.domains
    }

    /// One call's seven A-leg events ([`CALL_EVENTS`]), in order. The next call starts a few
    /// hundred milliseconds later, so calls taken one by one overlap in time as real ones do;
    /// use [`Switch::calls`] for their events interleaved.
    pub fn call(&mut self) -> Vec<Event> {
        let call = self.plan_call();
        let mut events: Vec<Event> = call_events(&self.info, &call).into_iter().map(|(_, e)| e).collect();
        for event in &mut events {
            self.emit(event);
        }
        events
    }

    /// `n` overlapping calls, their events merged in emission (time) order, as a switch under
    /// load really sends them.
    pub fn calls(&mut self, n: usize) -> Vec<Event> {
        let mut timed: Vec<(i64, Event)> = Vec::with_capacity(n * CALL_EVENTS.len());
        for _ in 0..n {
            let call = self.plan_call();
            timed.extend(call_events(&self.info, &call));
        }
        // Stable: events of one call at the same microsecond keep their order.
        timed.sort_by_key(|(at, _)| *at);
        timed
            .into_iter()
            .map(|(_, mut event)| {
                self.emit(&mut event);
                event
            })
            .collect()
    }

    /// Hands out the next `Event-Sequence`, at the moment the event leaves the switch.
    fn emit(&mut self, event: &mut Event) {
        self.sequence += 1;
        if let Some(seq) = event.0.get_mut("Event-Sequence") {
            *seq = self.sequence.to_string().into();
        }
    }

    fn uuid(&mut self) -> String {
        uuid_v4(&mut self.rng)
    }

    /// A domain drawn at random, for contact-center traffic: drawing it round-robin like calls
    /// would tie it to the call count, and some domains would never see any.
    fn random_domain(&mut self) -> String {
        self.domains[self.rng.random_range(0..self.domains.len())].clone()
    }

    fn next_domain(&mut self) -> String {
        let domain = self.domains[self.started % self.domains.len()].clone();
        self.started += 1;
        domain
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())]
    }

    fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        (0..len).map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char).collect()
    }

    fn lan_ip(&mut self) -> String {
        format!("192.168.{}.{}", self.rng.random_range(0..=20u8), self.rng.random_range(2..=254u8))
    }

    fn extension(&mut self) -> String {
        (1000 + self.rng.random_range(0..100u32)).to_string()
    }

    fn phone(&mut self) -> String {
        format!("+38044{:07}", self.rng.random_range(0..10_000_000u32))
    }

    /// A caller: a registered extension of the domain, or a customer calling in through the
    /// carrier.
    fn party(&mut self, registered: bool) -> Party {
        let number = if registered { self.extension() } else { self.phone() };
        Party {
            name: self.pick(&CALLER_NAMES).to_owned(),
            ip: if registered { self.lan_ip() } else { format!("203.0.113.{}", self.rng.random_range(2..=254u8)) },
            port: if registered { self.rng.random_range(5060..5100) } else { 5060 },
            user_agent: self.pick(&USER_AGENTS),
            registered,
            number,
        }
    }

    /// Draws everything about the next call (70 % from extensions, a third of those to external
    /// numbers) and moves the clock to the one after it.
    fn plan_call(&mut self) -> Call {
        let domain = self.next_domain();
        let registered = self.rng.random_bool(0.7);
        let caller = self.party(registered);
        let (dest, target) = if registered && self.rng.random_bool(0.3) {
            (self.phone(), Target::Gateway)
        } else {
            let ext = self.extension();
            let (ip, port) = (self.lan_ip(), self.rng.random_range(5060..5100));
            (ext, Target::User { ip, port })
        };
        let created = self.clock_us;
        let times = self.timeline(created);
        self.plan(domain, caller, dest, target, times)
    }

    /// Milestones of a bridged call starting at `created`: ringing, answer after 2–15 s,
    /// bridge 20 ms later, 5 s – 10 min of talk.
    fn timeline(&mut self, created: i64) -> Times {
        let progress = created + self.rng.random_range(80_000..400_000);
        let answered = progress + self.rng.random_range(2_000_000..15_000_000);
        let bridged = answered + self.rng.random_range(15_000..25_000);
        let hangup = answered + self.rng.random_range(5_000_000..600_000_000);
        Times { created, progress, answered, bridged, hangup }
    }

    fn plan(&mut self, domain: String, caller: Party, dest: String, target: Target, times: Times) -> Call {
        self.session_id += 1;
        self.advance_clock(times.created);
        let b_created = times.created + self.rng.random_range(20_000..60_000);
        let b_times = Times {
            created: b_created,
            progress: times.progress,
            answered: times.answered - self.rng.random_range(1_000..20_000),
            bridged: 0,
            hangup: 0,
        };
        let lost_packets = if self.rng.random_bool(0.8) { 0 } else { self.rng.random_range(1..200) };
        let sip_call_id = format!("{}@{}", self.token(24), caller.ip);
        Call {
            domain,
            switch_ip: self.info.ipv4.clone(),
            a_uuid: self.uuid(),
            b_uuid: self.uuid(),
            session_id: self.session_id,
            caller,
            dest,
            target,
            sip_call_id,
            from_tag: self.token(10),
            to_tag: self.token(13),
            branch: format!("z9hG4bK{}", self.token(16)),
            codec: &CODECS[self.rng.random_range(0..CODECS.len())],
            local_media_port: self.rng.random_range(16_384..32_768),
            remote_media_port: self.rng.random_range(10_000..20_000),
            ssrc: self.rng.random_range(1..u32::MAX),
            times,
            b_times,
            end_us: times.hangup,
            cause: &ANSWERED_CAUSES[self.rng.random_range(0..ANSWERED_CAUSES.len())],
            recv_bye: self.rng.random_bool(0.5),
            lost_packets,
        }
    }

    /// Calls arrive every 20–400 ms: enough to overlap, spread enough to look like traffic.
    fn advance_clock(&mut self, created: i64) {
        self.clock_us = self.clock_us.max(created) + self.rng.random_range(20_000..400_000);
    }
}

/// The A-leg's seven events with the time each fires, `Event-Sequence` not yet assigned.
fn call_events(info: &SwitchInfo, call: &Call) -> Vec<(i64, Event)> {
    let leg = inbound_leg(call);
    let t = &call.times;
    let complete = t.hangup + 12_000;
    let at = [t.created, t.progress, t.answered, t.bridged, t.hangup, complete, complete + 4_000];
    PHASES
        .iter()
        .zip(at)
        .map(|((phase, origin), now)| {
            let mut b = Builder::new(origin, info, now, leg.headers_at(*phase));
            match phase {
                Phase::Bridge => {
                    b.put("Bridge-A-Unique-ID", &call.a_uuid);
                    b.put("Bridge-B-Unique-ID", &call.b_uuid);
                }
                // Reporting adds the cause before the channel data, which adds it again.
                Phase::Complete => b.put("Hangup-Cause", call.cause.name),
                _ => {}
            }
            leg.write(&mut b, *phase, now);
            (now, b.finish())
        })
        .collect()
}

/// A random (version 4) UUID from the simulation's RNG, so it is reproducible.
fn uuid_v4(rng: &mut impl Rng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes).into_uuid().hyphenated().to_string()
}

#[cfg(test)]
mod tests;
