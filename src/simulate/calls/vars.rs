//! The channel variables (`variable_*`) of the legs the generator simulates, set phase by phase
//! the way mod_sofia, the dialplan, the bridge and the CDR code set them in FreeSWITCH 1.10.

use super::cdr::cdr;
use super::channel::{Leg, Phase, Profile, Times};
use super::data::{Cause, Codec};

/// Everything drawn at random for one call; building its events from it is deterministic.
pub struct Call {
    pub domain: String,
    pub switch_ip: String,
    pub a_uuid: String,
    pub b_uuid: String,
    pub session_id: u64,
    pub caller: Party,
    /// The number dialled: an extension of the domain, an external number, or a queue.
    pub dest: String,
    pub target: Target,
    pub sip_call_id: String,
    pub from_tag: String,
    pub to_tag: String,
    pub branch: String,
    pub codec: &'static Codec,
    pub local_media_port: u16,
    pub remote_media_port: u16,
    pub ssrc: u32,
    pub times: Times,
    pub b_times: Times,
    pub end_us: i64,
    pub cause: &'static Cause,
    /// The caller hung up (we received the BYE) rather than the callee.
    pub recv_bye: bool,
    /// Inbound packets lost, 0 on a clean line; drives the quality variables.
    pub lost_packets: u64,
}

pub struct Party {
    pub number: String,
    pub name: String,
    pub ip: String,
    pub port: u16,
    pub user_agent: &'static str,
    /// A registered extension of the domain, not a call from a carrier.
    pub registered: bool,
}

pub enum Target {
    /// Another extension, registered at `ip:port`.
    User { ip: String, port: u16 },
    /// An external number, through the carrier gateway.
    Gateway,
    /// A mod_callcenter queue (`name@domain`); the member leg never bridges by itself.
    Queue { queue: String, member_uuid: String },
}

/// The A-leg: the inbound channel of a call, from an extension or a carrier.
pub fn inbound_leg(c: &Call) -> Leg {
    let p = &c.caller;
    let (profile, context, channel_name, from_host) = if p.registered {
        ("internal", "default", format!("sofia/internal/{}@{}", p.number, c.domain), c.domain.as_str())
    } else {
        ("external", "public", format!("sofia/external/{}@{}", p.number, p.ip), p.ip.as_str())
    };
    let b_channel = match &c.target {
        Target::User { ip, port } => format!("sofia/internal/{}@{ip}:{port}", c.dest),
        Target::Gateway => format!("sofia/gateway/carrier/{}", c.dest),
        Target::Queue { .. } => String::new(),
    };
    let bridges = !matches!(c.target, Target::Queue { .. });
    let other = bridges.then(|| Profile {
        direction: "outbound",
        logical_direction: "inbound",
        username: p.number.clone(),
        cid_name: p.name.clone(),
        cid_number: p.number.clone(),
        callee: Some(("Outbound Call".to_owned(), c.dest.clone())),
        network_addr: match &c.target {
            Target::User { ip, .. } => ip.clone(),
            _ => c.switch_ip.clone(),
        },
        destination: c.dest.clone(),
        uuid: c.b_uuid.clone(),
        context,
        channel_name: b_channel.clone(),
        times: c.b_times,
    });
    let mut leg = Leg {
        uuid: c.a_uuid.clone(),
        direction: "inbound",
        channel_name: channel_name.clone(),
        call_uuid: c.a_uuid.clone(),
        hit_dialplan: true,
        presence_id: format!("{}@{}", p.number, c.domain),
        presence_data: c.domain.clone(),
        codec: c.codec,
        caller: Profile {
            direction: "inbound",
            logical_direction: "inbound",
            username: p.number.clone(),
            cid_name: p.name.clone(),
            cid_number: p.number.clone(),
            callee: bridges.then(|| ("Outbound Call".to_owned(), c.dest.clone())),
            network_addr: p.ip.clone(),
            destination: c.dest.clone(),
            uuid: c.a_uuid.clone(),
            context,
            channel_name: channel_name.clone(),
            times: c.times,
        },
        other,
        hangup_cause: c.cause.name,
        vars: Vec::with_capacity(240),
    };
    sip_invite(&mut leg, c, profile, &channel_name, from_host);
    dialplan(&mut leg, c);
    if bridges {
        bridged(&mut leg, c, &b_channel);
    }
    hangup(&mut leg, c);
    cdr(&mut leg, c);
    leg
}

/// What mod_sofia and the directory set while the INVITE is being authorised.
fn sip_invite(leg: &mut Leg, c: &Call, profile: &str, channel_name: &str, from_host: &str) {
    let p = &c.caller;
    let codec = c.codec;
    let create = Phase::Create;
    let to_host = if p.registered { c.domain.as_str() } else { c.switch_ip.as_str() };
    leg.var(create, "variable_direction", "inbound");
    leg.var(create, "variable_uuid", c.a_uuid.as_str());
    leg.var(create, "variable_session_id", c.session_id.to_string());
    leg.var(create, "variable_sip_from_user", p.number.as_str());
    leg.var(create, "variable_sip_from_uri", format!("{}@{from_host}", p.number));
    leg.var(create, "variable_sip_from_host", from_host);
    leg.var(create, "variable_video_media_flow", "disabled");
    leg.var(create, "variable_channel_name", channel_name);
    leg.var(create, "variable_sip_call_id", c.sip_call_id.as_str());
    leg.var(
        create,
        "variable_ep_codec_string",
        "CORE_PCM_MODULE.PCMU@8000h@20i@64000b,CORE_PCM_MODULE.PCMA@8000h@20i@64000b,mod_spandsp.G722@8000h@20i@64000b",
    );
    leg.var(create, "variable_sip_local_network_addr", c.switch_ip.as_str());
    leg.var(create, "variable_sip_network_ip", p.ip.as_str());
    leg.var(create, "variable_sip_network_port", p.port.to_string());
    leg.var(create, "variable_sip_received_ip", p.ip.as_str());
    leg.var(create, "variable_sip_received_port", p.port.to_string());
    leg.var(create, "variable_sip_via_protocol", "udp");
    if p.registered {
        leg.var(create, "variable_sip_authorized", "true");
        leg.var(create, "variable_sip_number_alias", p.number.as_str());
        leg.var(create, "variable_sip_auth_username", p.number.as_str());
        leg.var(create, "variable_sip_auth_realm", c.domain.as_str());
        leg.var(create, "variable_number_alias", p.number.as_str());
        leg.var(create, "variable_requested_user_name", p.number.as_str());
        leg.var(create, "variable_requested_domain_name", c.domain.as_str());
        leg.var(create, "variable_w_domain", c.domain.as_str());
        leg.var(create, "variable_user_scheme", "account");
        leg.var(create, "variable_user_context", "default");
        leg.var(create, "variable_effective_caller_id_name", p.name.as_str());
        leg.var(create, "variable_effective_caller_id_number", p.number.as_str());
        leg.var(create, "variable_outbound_caller_id_name", p.name.as_str());
        leg.var(create, "variable_account_role", "user");
        leg.var(create, "variable_user_name", p.number.as_str());
    } else {
        leg.var(create, "variable_sip_acl_authed_by", "carriers");
    }
    leg.var(create, "variable_domain_name", c.domain.as_str());
    leg.var(create, "variable_sip_from_user_stripped", p.number.as_str());
    leg.var(create, "variable_sip_from_tag", c.from_tag.as_str());
    leg.var(create, "variable_sofia_profile_name", profile);
    leg.var(create, "variable_recovery_profile_name", profile);
    let via = format!("SIP/2.0/UDP {}:{};rport={};branch={}", p.ip, p.port, p.port, c.branch);
    leg.var(create, "variable_sip_full_via", via);
    leg.var(create, "variable_sip_from_display", p.name.as_str());
    // The display name is a SIP quoted-string: an embedded `"` arrives escaped.
    let display = p.name.replace('"', "\\\"");
    let from = format!("\"{display}\" <sip:{}@{from_host}>;tag={}", p.number, c.from_tag);
    leg.var(create, "variable_sip_full_from", from);
    leg.var(create, "variable_sip_full_to", format!("<sip:{}@{to_host}>", c.dest));
    leg.var(create, "variable_sip_req_user", c.dest.as_str());
    leg.var(create, "variable_sip_req_uri", format!("{}@{to_host}", c.dest));
    leg.var(create, "variable_sip_req_host", to_host);
    leg.var(create, "variable_sip_to_user", c.dest.as_str());
    leg.var(create, "variable_sip_to_uri", format!("{}@{to_host}", c.dest));
    leg.var(create, "variable_sip_to_host", to_host);
    leg.var(create, "variable_sip_contact_user", p.number.as_str());
    leg.var(create, "variable_sip_contact_port", p.port.to_string());
    leg.var(create, "variable_sip_contact_uri", format!("{}@{}:{}", p.number, p.ip, p.port));
    leg.var(create, "variable_sip_contact_host", p.ip.as_str());
    leg.var(create, "variable_sip_user_agent", p.user_agent);
    leg.var(create, "variable_sip_via_host", p.ip.as_str());
    leg.var(create, "variable_sip_via_port", p.port.to_string());
    leg.var(create, "variable_max_forwards", "70");
    leg.var(create, "variable_presence_id", leg.presence_id.clone());
    let sdp = format!(
        "v=0\r\no=- {0} {0} IN IP4 {1}\r\ns=SDP data\r\nc=IN IP4 {1}\r\nt=0 0\r\nm=audio {2} RTP/AVP 0 8 9 101\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:9 G722/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n",
        c.session_id + 20_000,
        p.ip,
        c.remote_media_port
    );
    leg.var(create, "variable_switch_r_sdp", sdp);
    leg.var(create, "variable_audio_media_flow", "sendrecv");
    leg.var(create, "variable_rtp_use_codec_string", "OPUS,G722,PCMA,PCMU");
    leg.var(create, "variable_remote_media_ip", p.ip.as_str());
    leg.var(create, "variable_remote_media_port", c.remote_media_port.to_string());
    leg.var(create, "variable_rtp_audio_recv_pt", codec.pt.to_string());
    leg.var(create, "variable_rtp_use_codec_name", codec.name);
    leg.var(create, "variable_rtp_use_codec_rate", codec.rate.to_string());
    leg.var(create, "variable_rtp_use_codec_ptime", "20");
    leg.var(create, "variable_rtp_use_codec_channels", "1");
    let last_codec = format!("{}@{}h@20i@1c", codec.name, codec.rate);
    leg.var(create, "variable_rtp_last_audio_codec_string", last_codec);
    leg.var(create, "variable_read_codec", codec.name);
    leg.var(create, "variable_original_read_codec", codec.name);
    leg.var(create, "variable_read_rate", codec.rate.to_string());
    leg.var(create, "variable_original_read_rate", codec.rate.to_string());
    leg.var(create, "variable_write_codec", codec.name);
    leg.var(create, "variable_write_rate", codec.rate.to_string());
    leg.var(create, "variable_dtmf_type", "rfc2833");
    leg.var(create, "variable_endpoint_disposition", "RECEIVED");
    leg.var(create, "variable_call_uuid", c.a_uuid.as_str());
}

/// What the (Webitel-style) dialplan sets before it runs `bridge` or `callcenter`.
fn dialplan(leg: &mut Leg, c: &Call) {
    let at = Phase::Progress;
    let direction = match (&c.target, c.caller.registered) {
        (Target::Gateway, _) => "outbound",
        (_, true) => "internal",
        (_, false) => "inbound",
    };
    leg.var(at, "variable_sound_prefix", "/usr/share/freeswitch/sounds/en/us/callie");
    leg.var(at, "variable_webitel_direction", direction);
    leg.var(at, "variable_dialed_extension", c.dest.as_str());
    leg.var(at, "variable_export_vars", "dialed_extension");
    leg.var(at, "variable_eavesdrop_group", c.domain.as_str());
    leg.var(at, "variable_presence_data", c.domain.as_str());
    leg.var(at, "variable_ringback", "%(2000,4000,440,480)");
    leg.var(at, "variable_transfer_ringback", "%(400,200,400,450);%(400,2000,400,450)");
    leg.var(at, "variable_hangup_after_bridge", "true");
    leg.var(at, "variable_continue_on_fail", "true");
    leg.var(at, "variable_RECORD_STEREO", "true");
    leg.var(at, "variable_RECORD_BRIDGE_REQ", "true");
    leg.var(at, "variable_local_media_ip", c.switch_ip.as_str());
    leg.var(at, "variable_local_media_port", c.local_media_port.to_string());
    leg.var(at, "variable_advertised_media_ip", c.switch_ip.as_str());
    leg.var(at, "variable_rtp_use_timer_name", "soft");
    leg.var(at, "variable_rtp_use_pt", c.codec.pt.to_string());
    leg.var(at, "variable_rtp_use_ssrc", c.ssrc.to_string());
    let (app, data) = match &c.target {
        Target::User { .. } => ("bridge", format!("{{domain_name={0}}}user/{1}@{0}", c.domain, c.dest)),
        Target::Gateway => ("bridge", format!("sofia/gateway/carrier/{}", c.dest)),
        Target::Queue { queue, member_uuid } => {
            leg.var(at, "variable_cc_queue", queue.as_str());
            leg.var(at, "variable_cc_member_uuid", member_uuid.as_str());
            leg.var(at, "variable_cc_member_session_uuid", c.a_uuid.as_str());
            leg.var(at, "variable_cc_queue_joined_epoch", (c.times.answered / 1_000_000).to_string());
            ("callcenter", queue.clone())
        }
    };
    leg.var(at, "variable_current_application_data", data);
    leg.var(at, "variable_current_application", app);
    if let Target::User { .. } = c.target {
        leg.var(at, "variable_dialed_user", c.dest.as_str());
        leg.var(at, "variable_dialed_domain", c.domain.as_str());
    }
    let local_sdp = format!(
        "v=0\r\no=FreeSWITCH {0} {1} IN IP4 {2}\r\ns=FreeSWITCH\r\nc=IN IP4 {2}\r\nt=0 0\r\n\
         m=audio {3} RTP/AVP {4} 101\r\na=rtpmap:{4} {5}/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n",
        c.times.created / 1_000_000,
        c.times.created / 1_000_000 + 1,
        c.switch_ip,
        c.local_media_port,
        c.codec.pt,
        c.codec.name
    );
    leg.var(Phase::Answer, "variable_rtp_local_sdp_str", local_sdp);
    leg.var(Phase::Answer, "variable_rtp_2833_send_payload", "101");
    leg.var(Phase::Answer, "variable_rtp_2833_recv_payload", "101");
    leg.var(Phase::Answer, "variable_endpoint_disposition", "ANSWER");
}

/// What `bridge` leaves behind once the B-leg answered and the two are bridged.
fn bridged(leg: &mut Leg, c: &Call, b_channel: &str) {
    let b = &c.b_uuid;
    let legs = format!("ARRAY::{b};Outbound Call;{0}|:{b};Outbound Call;{0}", c.dest);
    leg.var(Phase::Answer, "variable_originated_legs", legs);
    leg.var(Phase::Answer, "variable_originate_causes", format!("ARRAY::{b};NONE|:{b};NONE"));
    leg.var(Phase::Answer, "variable_originate_disposition", "SUCCESS");
    leg.var(Phase::Answer, "variable_DIALSTATUS", "SUCCESS");
    let at = Phase::Bridge;
    leg.var(at, "variable_last_bridge_to", b.as_str());
    leg.var(at, "variable_bridge_channel", b_channel);
    leg.var(at, "variable_bridge_uuid", b.as_str());
    leg.var(at, "variable_signal_bond", b.as_str());
    leg.var(at, "variable_sip_to_tag", c.to_tag.as_str());
    leg.var(at, "variable_sip_cseq", "2");
    leg.var(at, "variable_last_sent_callee_id_name", "Outbound Call");
    leg.var(at, "variable_last_sent_callee_id_number", c.dest.as_str());
}

fn hangup(leg: &mut Leg, c: &Call) {
    let at = Phase::Hangup;
    let cause = c.cause;
    leg.var(at, "variable_sip_hangup_phrase", "OK");
    leg.var(at, "variable_last_bridge_hangup_cause", cause.name);
    leg.var(at, "variable_last_bridge_proto_specific_hangup_cause", cause.sip);
    leg.var(at, "variable_bridge_hangup_cause", cause.name);
    leg.var(at, "variable_sip_term_status", cause.sip.trim_start_matches("sip:"));
    leg.var(at, "variable_proto_specific_hangup_cause", cause.sip);
    leg.var(at, "variable_sip_term_cause", cause.q850.to_string());
    leg.var(at, "variable_hangup_cause", cause.name);
    leg.var(at, "variable_hangup_cause_q850", cause.q850.to_string());
}
