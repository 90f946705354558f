//! Fixed tables the call generator draws from (caller names, phones, codecs, hangup causes) and
//! the two date formats FreeSWITCH writes into events.

/// Caller names as directories and carriers really deliver them: non-ASCII, spaces, commas, a
/// `%`, and now and then a `"` — the values that break naive URL or JSON handling.
pub const CALLER_NAMES: [&str; 18] = [
    "Igor Navrotskyi",
    "Олена Коваленко",
    "José Álvarez",
    "Zoë O'Connor",
    "Mike \"The Boss\" Smith",
    "李娜",
    "Jean-François Dupont",
    "Łukasz Wójcik",
    "Sales Desk",
    "Müller & Söhne GmbH",
    "Reception",
    "Ahmed Al-Sayed",
    "Ana María de la Cruz",
    "Björk Guðmundsdóttir",
    "Nguyễn Văn An",
    "O'Brien, Pat",
    "100% Support",
    "\"VIP\" Line",
];

/// Member names the dialer works through (customers, not extensions).
pub const MEMBER_NAMES: [&str; 8] = [
    "Petro Shevchenko",
    "María José García",
    "Kowalski Jan",
    "Émilie Leroy",
    "Oleg \"Olezhka\" Ivanov",
    "Acme Corp, Billing",
    "Sakura Tanaka",
    "Svensson Åsa",
];

pub const USER_AGENTS: [&str; 7] = [
    "Yealink SIP-T46S 66.86.0.15",
    "Grandstream GXP2170 1.0.11.23",
    "Zoiper rv2.10.20.6",
    "Linphone/5.2.5 (belle-sip/5.2.4)",
    "Cisco/SPA504G-7.6.2c",
    "webitel-phone/2.5.1 (JsSIP 3.10.0)",
    "MicroSIP/3.21.3",
];

pub struct Codec {
    pub name: &'static str,
    pub rate: u32,
    pub bit_rate: u32,
    pub pt: u8,
}

pub const CODECS: [Codec; 3] = [
    Codec { name: "PCMU", rate: 8000, bit_rate: 64000, pt: 0 },
    Codec { name: "PCMA", rate: 8000, bit_rate: 64000, pt: 8 },
    Codec { name: "G722", rate: 16000, bit_rate: 64000, pt: 9 },
];

pub struct Cause {
    pub name: &'static str,
    pub q850: u8,
    /// What `variable_proto_specific_hangup_cause` says for it.
    pub sip: &'static str,
}

/// Causes for a call that was answered; `NORMAL_CLEARING` dominates as it does in real CDRs.
pub const ANSWERED_CAUSES: [Cause; 4] = [
    Cause { name: "NORMAL_CLEARING", q850: 16, sip: "sip:200" },
    Cause { name: "NORMAL_CLEARING", q850: 16, sip: "sip:200" },
    Cause { name: "NORMAL_CLEARING", q850: 16, sip: "sip:200" },
    Cause { name: "NORMAL_UNSPECIFIED", q850: 31, sip: "sip:480" },
];

/// How the engine's dialer reports a member attempt that ended.
pub const DIALER_END_CAUSES: [&str; 5] =
    ["NORMAL_CLEARING", "NO_ANSWER", "USER_BUSY", "ORIGINATOR_CANCEL", "ABANDONED"];

pub const DIALER_NAMES: [&str; 4] = ["Debt collection", "Survey Q3", "Callback — missed calls", "Renewals 2025"];

/// 2025-03-14 10:00:00 UTC: simulated time starts here, so a seed always gives the same dates.
pub const EPOCH_START_US: i64 = 1_741_946_400_000_000;

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: usize,
}

/// Microseconds since the epoch to a UTC calendar date and time (Howard Hinnant's `civil_from_days`).
fn civil(micros: i64) -> Civil {
    let secs = micros.div_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: rem / 60 % 60,
        second: rem % 60,
        // 1970-01-01 was a Thursday.
        weekday: (days + 4).rem_euclid(7) as usize,
    }
}

/// `2025-03-14 10:00:00`: `Event-Date-Local` and the `*_stamp` variables (the simulated switch
/// runs in UTC, so local time is GMT).
pub fn local_stamp(micros: i64) -> String {
    let c = civil(micros);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second)
}

/// `Fri, 14 Mar 2025 10:00:00 GMT`: `Event-Date-GMT`.
pub fn gmt_stamp(micros: i64) -> String {
    let c = civil(micros);
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[c.weekday],
        c.day,
        MONTHS[c.month as usize - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_freeswitch_formats() {
        assert_eq!(local_stamp(EPOCH_START_US), "2025-03-14 10:00:00");
        assert_eq!(gmt_stamp(EPOCH_START_US), "Fri, 14 Mar 2025 10:00:00 GMT");
        // From a real dump: Event-Date-Timestamp 1468571895627235.
        assert_eq!(gmt_stamp(1_468_571_895_627_235), "Fri, 15 Jul 2016 08:38:15 GMT");
        assert_eq!(local_stamp(951_782_400_000_000), "2000-02-29 00:00:00");
        assert_eq!(gmt_stamp(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
