//! The variables FreeSWITCH adds when the channel is reported (CHANNEL_HANGUP_COMPLETE on):
//! CDR timestamps and durations (`switch_channel_set_timestamps`) and mod_sofia's RTP statistics.

use super::channel::{Leg, Phase};
use super::data::local_stamp;
use super::vars::Call;

/// The CDR timestamps and durations (`switch_channel_set_timestamps`) and the RTP statistics
/// mod_sofia writes when the channel is reported.
pub fn cdr(leg: &mut Leg, c: &Call) {
    let at = Phase::Complete;
    let t = &c.times;
    let (start, answer, bridge, progress, end) = (t.created, t.answered, t.bridged, t.progress, c.end_us);
    leg.var(at, "variable_digits_dialed", "none");
    for (name, us) in [
        ("variable_start_stamp", start),
        ("variable_profile_start_stamp", start),
        ("variable_answer_stamp", answer),
        ("variable_bridge_stamp", bridge),
        ("variable_progress_stamp", progress),
        ("variable_end_stamp", end),
    ] {
        leg.var(at, name, local_stamp(us));
    }
    for (epoch, uepoch, us) in [
        ("variable_start_epoch", "variable_start_uepoch", start),
        ("variable_profile_start_epoch", "variable_profile_start_uepoch", start),
        ("variable_answer_epoch", "variable_answer_uepoch", answer),
        ("variable_bridge_epoch", "variable_bridge_uepoch", bridge),
        ("variable_last_hold_epoch", "variable_last_hold_uepoch", 0),
        ("variable_resurrect_epoch", "variable_resurrect_uepoch", 0),
        ("variable_progress_epoch", "variable_progress_uepoch", progress),
        ("variable_progress_media_epoch", "variable_progress_media_uepoch", 0),
        ("variable_end_epoch", "variable_end_uepoch", end),
    ] {
        leg.var(at, epoch, (us / 1_000_000).to_string());
        leg.var(at, uepoch, us.to_string());
    }
    leg.var(at, "variable_hold_accum_seconds", "0");
    leg.var(at, "variable_hold_accum_usec", "0");
    leg.var(at, "variable_hold_accum_ms", "0");
    let last_app = leg.vars.iter().rev().find(|(_, n, _)| *n == "variable_current_application");
    let last_app = last_app.map(|(_, _, v)| v.clone()).unwrap_or_default();
    let last_arg = leg.vars.iter().rev().find(|(_, n, _)| *n == "variable_current_application_data");
    let last_arg = last_arg.map(|(_, _, v)| v.clone()).unwrap_or_default();
    leg.var(at, "variable_last_app", last_app);
    leg.var(at, "variable_last_arg", last_arg);
    leg.var(at, "variable_caller_id", format!("\"{}\" <{}>", c.caller.name, c.caller.number));
    // FreeSWITCH subtracts whole-second epochs for *sec and microseconds for the rest.
    let secs = |from: i64| {
        if from == 0 { 0 } else { end / 1_000_000 - from / 1_000_000 }
    };
    let since_start = |to: i64| if to == 0 { 0 } else { to - start };
    // (seconds, milliseconds, microseconds) names, FreeSWITCH's own irregular ones.
    let durations = [
        (["variable_duration", "variable_mduration", "variable_uduration"], secs(start), end - start),
        (["variable_billsec", "variable_billmsec", "variable_billusec"], secs(answer), end - answer),
        (
            ["variable_progresssec", "variable_progressmsec", "variable_progressusec"],
            progress / 1_000_000 - start / 1_000_000,
            since_start(progress),
        ),
        (
            ["variable_answersec", "variable_answermsec", "variable_answerusec"],
            answer / 1_000_000 - start / 1_000_000,
            since_start(answer),
        ),
        (
            ["variable_waitsec", "variable_waitmsec", "variable_waitusec"],
            bridge.max(answer) / 1_000_000 - start / 1_000_000,
            since_start(bridge.max(answer)),
        ),
        (["variable_progress_mediasec", "variable_progress_mediamsec", "variable_progress_mediausec"], 0, 0),
        (["variable_flow_billsec", "variable_flow_billmsec", "variable_flow_billusec"], secs(start), end - start),
    ];
    for unit in 0..3 {
        for (names, s, us) in &durations {
            let value = match unit {
                0 => *s,
                1 => us / 1000,
                _ => *us,
            };
            leg.var(at, names[unit], value.to_string());
        }
    }
    let disposition = if c.recv_bye { "recv_bye" } else { "send_bye" };
    leg.var(at, "variable_sip_hangup_disposition", disposition);
    rtp_stats(leg, c, end - answer);
}

fn rtp_stats(leg: &mut Leg, c: &Call, talk_us: i64) {
    let at = Phase::Complete;
    // 20 ms packets of 160 payload bytes for every codec offered here.
    let sent = (talk_us.max(0) / 20_000) as u64;
    let received = sent.saturating_sub(c.lost_packets);
    let loss = if sent == 0 { 0.0 } else { c.lost_packets as f64 * 100.0 / sent as f64 };
    let quality = (100.0 - loss * 4.0).max(60.0);
    let mos = 1.0 + quality * 0.035;
    let stats: [(&'static str, String); 27] = [
        ("variable_rtp_audio_in_raw_bytes", (received * 160 + 4 * 12).to_string()),
        ("variable_rtp_audio_in_media_bytes", (received * 160).to_string()),
        ("variable_rtp_audio_in_packet_count", (received + 4).to_string()),
        ("variable_rtp_audio_in_media_packet_count", received.to_string()),
        ("variable_rtp_audio_in_skip_packet_count", (c.lost_packets / 2 + 3).to_string()),
        ("variable_rtp_audio_in_jitter_packet_count", "0".into()),
        ("variable_rtp_audio_in_dtmf_packet_count", "0".into()),
        ("variable_rtp_audio_in_cng_packet_count", "0".into()),
        ("variable_rtp_audio_in_flush_packet_count", "0".into()),
        ("variable_rtp_audio_in_largest_jb_size", "0".into()),
        ("variable_rtp_audio_in_jitter_min_variance", format!("{:.2}", 10.0 + loss)),
        ("variable_rtp_audio_in_jitter_max_variance", format!("{:.2}", 380.0 + loss * 90.0)),
        ("variable_rtp_audio_in_jitter_loss_rate", format!("{:.2}", loss / 100.0)),
        ("variable_rtp_audio_in_jitter_burst_rate", "0.00".into()),
        ("variable_rtp_audio_in_mean_interval", "20.00".into()),
        ("variable_rtp_audio_in_flaw_total", c.lost_packets.to_string()),
        ("variable_rtp_audio_in_quality_percentage", format!("{quality:.2}")),
        ("variable_rtp_audio_in_mos", format!("{mos:.2}")),
        ("variable_rtp_audio_out_raw_bytes", (sent * 160).to_string()),
        ("variable_rtp_audio_out_media_bytes", (sent * 160).to_string()),
        ("variable_rtp_audio_out_packet_count", sent.to_string()),
        ("variable_rtp_audio_out_media_packet_count", sent.to_string()),
        ("variable_rtp_audio_out_skip_packet_count", "0".into()),
        ("variable_rtp_audio_out_dtmf_packet_count", "0".into()),
        ("variable_rtp_audio_out_cng_packet_count", "0".into()),
        ("variable_rtp_audio_rtcp_packet_count", (sent / 250).to_string()),
        ("variable_rtp_audio_rtcp_octet_count", (sent / 250 * 32).to_string()),
    ];
    for (name, value) in stats {
        leg.var(at, name, value);
    }
}
