//! Header blocks FreeSWITCH puts on channel events: the common event headers, then the channel
//! data (`switch_channel_event_set_data`): state, caller profile, other leg, channel variables.

use serde_json::{Map, Value};

use super::data::{Codec, gmt_stamp, local_stamp};
use crate::event::Event;

/// Where a leg is in its life. Variables are tagged with the phase that sets them, so an event
/// carries exactly the variables that existed when it fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Create,
    Progress,
    Answer,
    Bridge,
    Hangup,
    Complete,
    Destroy,
}

/// Where `switch_event_create` was called from: `Event-Calling-*` (FreeSWITCH 1.10 sources; the
/// line numbers move between releases and are only plausible).
pub struct Origin {
    pub name: &'static str,
    pub subclass: Option<&'static str>,
    pub file: &'static str,
    pub function: &'static str,
    pub line: u32,
}

pub const fn origin(name: &'static str, file: &'static str, function: &'static str, line: u32) -> Origin {
    Origin { name, subclass: None, file, function, line }
}

/// Identity of the simulated switch, repeated in every event it emits.
pub struct SwitchInfo {
    pub core_uuid: String,
    pub hostname: String,
    pub switchname: String,
    pub ipv4: String,
    pub ipv6: String,
}

/// Accumulates one event's headers in emission order; all values are strings, as on the wire.
pub struct Builder(Map<String, Value>);

/// Placeholder until the event is emitted: the sequence is taken in emission order, which for
/// interleaved calls is only known after sorting.
pub const UNSEQUENCED: &str = "0";

impl Builder {
    /// `capacity`: the headers expected, so the map is allocated once.
    pub fn new(origin: &Origin, switch: &SwitchInfo, now_us: i64, capacity: usize) -> Self {
        let mut b = Builder(Map::with_capacity(capacity));
        // Custom events carry their subclass first: it is added when the event is created,
        // before the common headers.
        if let Some(subclass) = origin.subclass {
            b.put("Event-Subclass", subclass);
        }
        b.put("Event-Name", origin.name);
        b.put("Core-UUID", &switch.core_uuid);
        b.put("FreeSWITCH-Hostname", &switch.hostname);
        b.put("FreeSWITCH-Switchname", &switch.switchname);
        b.put("FreeSWITCH-IPv4", &switch.ipv4);
        b.put("FreeSWITCH-IPv6", &switch.ipv6);
        b.put("Event-Date-Local", local_stamp(now_us));
        b.put("Event-Date-GMT", gmt_stamp(now_us));
        b.put("Event-Date-Timestamp", now_us.to_string());
        b.put("Event-Calling-File", origin.file);
        b.put("Event-Calling-Function", origin.function);
        b.put("Event-Calling-Line-Number", origin.line.to_string());
        b.put("Event-Sequence", UNSEQUENCED);
        b
    }

    /// A name already present keeps its first position and takes the new value: FreeSWITCH
    /// overwrites a channel variable in place, and a header it repeats (`Hangup-Cause` in
    /// CHANNEL_HANGUP_COMPLETE) can only appear once in an [`Event`].
    pub fn put(&mut self, name: &str, value: impl Into<String>) {
        self.0.insert(name.to_owned(), Value::String(value.into()));
    }

    pub fn finish(self) -> Event {
        Event(self.0)
    }
}

/// A caller profile (`Caller-*`, or `Other-Leg-*` for the peer).
#[derive(Clone)]
pub struct Profile {
    pub direction: &'static str,
    pub logical_direction: &'static str,
    pub username: String,
    pub cid_name: String,
    pub cid_number: String,
    /// Set once the peer is known (from `Progress`), as `Outbound Call` / the dialled number.
    pub callee: Option<(String, String)>,
    pub network_addr: String,
    pub destination: String,
    pub uuid: String,
    pub context: &'static str,
    pub channel_name: String,
    pub times: Times,
}

/// Microsecond timestamps of a leg's milestones; 0 when it never happens.
#[derive(Debug, Clone, Copy, Default)]
pub struct Times {
    pub created: i64,
    pub progress: i64,
    pub answered: i64,
    pub bridged: i64,
    pub hangup: i64,
}

/// One channel: what `switch_channel_event_set_data` reads.
pub struct Leg {
    pub uuid: String,
    pub direction: &'static str,
    pub channel_name: String,
    pub call_uuid: String,
    pub hit_dialplan: bool,
    pub presence_id: String,
    /// Set by the dialplan (`presence_data`), so absent from `CHANNEL_CREATE`.
    pub presence_data: String,
    pub codec: &'static Codec,
    pub caller: Profile,
    /// The peer leg, known from `Progress` on.
    pub other: Option<Profile>,
    pub hangup_cause: &'static str,
    /// Channel variables in the order they were set, each with the phase that set it; a name
    /// may repeat when a later phase overwrites it.
    pub vars: Vec<(Phase, &'static str, String)>,
}

impl Leg {
    pub fn var(&mut self, phase: Phase, name: &'static str, value: impl Into<String>) {
        self.vars.push((phase, name, value.into()));
    }

    /// How many headers an event with this leg's data at `phase` has, at most.
    pub fn headers_at(&self, phase: Phase) -> usize {
        // Common headers and their extras (subclass, bridge ids, cause), channel state, codecs,
        // caller profile with `Other-Type`, other-leg profile.
        const COMMON_AND_CHANNEL: usize = 16 + 13 + 6 + 33 + 32;
        COMMON_AND_CHANNEL + self.vars.iter().filter(|(set, _, _)| *set <= phase).count()
    }

    /// The channel data of this leg as it stands at `phase`, at time `now`.
    pub fn write(&self, b: &mut Builder, phase: Phase, now: i64) {
        let (state, call_state, number, answer_state) = states(phase, self.direction);
        b.put("Channel-State", state);
        b.put("Channel-Call-State", call_state);
        b.put("Channel-State-Number", number);
        b.put("Channel-Name", &self.channel_name);
        b.put("Unique-ID", &self.uuid);
        b.put("Call-Direction", self.direction);
        b.put("Presence-Call-Direction", self.direction);
        b.put("Channel-HIT-Dialplan", if self.hit_dialplan { "true" } else { "false" });
        b.put("Channel-Presence-ID", &self.presence_id);
        if phase > Phase::Create {
            b.put("Channel-Presence-Data", &self.presence_data);
        }
        b.put("Channel-Call-UUID", &self.call_uuid);
        b.put("Answer-State", answer_state);
        if phase >= Phase::Hangup {
            b.put("Hangup-Cause", self.hangup_cause);
        }
        let codec = self.codec;
        b.put("Channel-Read-Codec-Name", codec.name);
        b.put("Channel-Read-Codec-Rate", codec.rate.to_string());
        b.put("Channel-Read-Codec-Bit-Rate", codec.bit_rate.to_string());
        b.put("Channel-Write-Codec-Name", codec.name);
        b.put("Channel-Write-Codec-Rate", codec.rate.to_string());
        b.put("Channel-Write-Codec-Bit-Rate", codec.bit_rate.to_string());
        write_profile(b, true, &self.caller, phase, now);
        if let Some(other) = self.other.as_ref().filter(|_| phase > Phase::Create) {
            // From the A-leg the peer is the originatee; from a B-leg, the originator.
            let kind = if self.direction == "inbound" { "originatee" } else { "originator" };
            b.put("Other-Type", kind);
            write_profile(b, false, other, phase, now);
        }
        for (_, name, value) in self.vars.iter().filter(|(set, _, _)| *set <= phase) {
            b.put(name, value.as_str());
        }
    }
}

/// `Channel-State`, `Channel-Call-State`, `Channel-State-Number` (the running state) and
/// `Answer-State` at each phase, as real dumps show them.
fn states(phase: Phase, direction: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    let media = if direction == "inbound" { ("CS_EXECUTE", "4") } else { ("CS_EXCHANGE_MEDIA", "5") };
    match phase {
        Phase::Create => ("CS_INIT", "DOWN", "2", "ringing"),
        Phase::Progress => (media.0, "RINGING", media.1, "ringing"),
        Phase::Answer | Phase::Bridge => (media.0, "ACTIVE", media.1, "answered"),
        Phase::Hangup => (media.0, "HANGUP", media.1, "hangup"),
        Phase::Complete => ("CS_REPORTING", "HANGUP", "11", "hangup"),
        Phase::Destroy => ("CS_REPORTING", "HANGUP", "12", "hangup"),
    }
}

/// The profile headers in FreeSWITCH's order, spelled out so no name is formatted per event.
macro_rules! prefixed {
    ($prefix:literal) => {
        [
            concat!($prefix, "Direction"),
            concat!($prefix, "Logical-Direction"),
            concat!($prefix, "Username"),
            concat!($prefix, "Dialplan"),
            concat!($prefix, "Caller-ID-Name"),
            concat!($prefix, "Caller-ID-Number"),
            concat!($prefix, "Orig-Caller-ID-Name"),
            concat!($prefix, "Orig-Caller-ID-Number"),
            concat!($prefix, "Callee-ID-Name"),
            concat!($prefix, "Callee-ID-Number"),
            concat!($prefix, "Network-Addr"),
            concat!($prefix, "ANI"),
            concat!($prefix, "Destination-Number"),
            concat!($prefix, "Unique-ID"),
            concat!($prefix, "Source"),
            concat!($prefix, "Context"),
            concat!($prefix, "Channel-Name"),
            concat!($prefix, "Profile-Index"),
            concat!($prefix, "Profile-Created-Time"),
            concat!($prefix, "Channel-Created-Time"),
            concat!($prefix, "Channel-Answered-Time"),
            concat!($prefix, "Channel-Progress-Time"),
            concat!($prefix, "Channel-Progress-Media-Time"),
            concat!($prefix, "Channel-Hangup-Time"),
            concat!($prefix, "Channel-Transfer-Time"),
            concat!($prefix, "Channel-Resurrect-Time"),
            concat!($prefix, "Channel-Bridged-Time"),
            concat!($prefix, "Channel-Last-Hold"),
            concat!($prefix, "Channel-Hold-Accum"),
            concat!($prefix, "Screen-Bit"),
            concat!($prefix, "Privacy-Hide-Name"),
            concat!($prefix, "Privacy-Hide-Number"),
        ]
    };
}

const CALLER_FIELDS: [&str; 32] = prefixed!("Caller-");
const OTHER_LEG_FIELDS: [&str; 32] = prefixed!("Other-Leg-");

fn write_profile(b: &mut Builder, caller: bool, p: &Profile, phase: Phase, now: i64) {
    let names = if caller { &CALLER_FIELDS } else { &OTHER_LEG_FIELDS };
    // A milestone shows once it has happened; the peer's hangup is never in our profile.
    let at = |t: i64| Some(if t != 0 && t <= now { t.to_string() } else { "0".to_owned() });
    let fixed = |s: &str| Some(s.to_owned());
    let t = &p.times;
    let callee = p.callee.as_ref().filter(|_| phase > Phase::Create);
    let values: [Option<String>; 32] = [
        fixed(p.direction),
        fixed(p.logical_direction),
        fixed(&p.username),
        fixed("XML"),
        fixed(&p.cid_name),
        fixed(&p.cid_number),
        fixed(&p.cid_name),
        fixed(&p.cid_number),
        callee.map(|(name, _)| name.clone()),
        callee.map(|(_, number)| number.clone()),
        fixed(&p.network_addr),
        fixed(&p.cid_number),
        fixed(&p.destination),
        fixed(&p.uuid),
        fixed("mod_sofia"),
        fixed(p.context),
        fixed(&p.channel_name),
        caller.then(|| "1".to_owned()),
        at(t.created),
        at(t.created),
        at(t.answered),
        at(t.progress),
        fixed("0"),
        at(if caller { t.hangup } else { 0 }),
        fixed("0"),
        fixed("0"),
        at(t.bridged),
        fixed("0"),
        fixed("0"),
        fixed("true"),
        fixed("false"),
        fixed("false"),
    ];
    for (name, value) in names.iter().zip(values) {
        if let Some(value) = value {
            b.put(name, value);
        }
    }
}
