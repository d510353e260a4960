//! What an NWB file says about the session that the recording does not hold: who, when, which
//! animal, which microscope and indicator. `tessera export nwb` fills it from flags, a workflow's
//! `outputs.nwb` from YAML; both check it with [`Session::check`] before any work starts, so a run
//! that would end in a file DANDI rejects (no start time, a subject without species, a device name
//! that would break the file's paths) is refused at submission, not after hours of compute.

use serde::{Deserialize, Serialize};

/// Defaults, shared by the command line and the workflow schema.
pub const DEFAULT_DESCRIPTION: &str = "calcium imaging session analysed by tessera";
pub const DEFAULT_DEVICE: &str = "Microscope";
pub const DEFAULT_INDICATOR: &str = "GCaMP6f";
pub const DEFAULT_LOCATION: &str = "unknown";
pub const DEFAULT_EXCITATION_NM: f64 = 920.0;
pub const DEFAULT_EMISSION_NM: f64 = 510.0;

/// The subject of the session (DANDI requires id, species, sex and age).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub subject_id: String,
    /// Latin binomial or NCBI taxonomy URI, e.g. `Mus musculus`. No default: a wrong species
    /// would mislabel the data in the archive.
    pub species: String,
    /// `M`, `F`, `U` or `O`.
    pub sex: String,
    /// ISO 8601 duration, e.g. `P90D`.
    pub age: String,
}

/// The raw movie in the NWB file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RawData {
    /// Left in the recording the run names (the file records its URI).
    #[default]
    None,
    /// Copied into the file as `/acquisition/TwoPhotonSeries` (chunked, gzip).
    Copy,
}

/// Session metadata for an NWB file. Field names are NWB's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub session_description: String,
    /// ISO 8601 with a UTC offset, e.g. `2026-03-01T10:15:00+01:00`.
    pub session_start_time: String,
    /// Default: derived from the run's input digest and workflow hash.
    pub identifier: Option<String>,
    pub experimenter: Vec<String>,
    pub lab: Option<String>,
    pub institution: Option<String>,
    pub subject: Option<Subject>,
    pub device: String,
    pub indicator: String,
    /// Brain region, e.g. `VISp`.
    pub location: String,
    pub excitation_lambda_nm: f64,
    pub emission_lambda_nm: f64,
    /// Micrometres per pixel, when known.
    pub pixel_size_um: Option<f64>,
    pub raw: RawData,
}

impl Session {
    /// A session that started at `start_time`, every other field at its default.
    pub fn new(start_time: impl Into<String>) -> Session {
        Session {
            session_description: DEFAULT_DESCRIPTION.into(),
            session_start_time: start_time.into(),
            identifier: None,
            experimenter: Vec::new(),
            lab: None,
            institution: None,
            subject: None,
            device: DEFAULT_DEVICE.into(),
            indicator: DEFAULT_INDICATOR.into(),
            location: DEFAULT_LOCATION.into(),
            excitation_lambda_nm: DEFAULT_EXCITATION_NM,
            emission_lambda_nm: DEFAULT_EMISSION_NM,
            pixel_size_um: None,
            raw: RawData::None,
        }
    }

    /// Every problem, as (field, what is wrong); empty when the session can be written.
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Err(e) = check_datetime(&self.session_start_time) {
            problems.push(("session_start_time", e));
        }
        if self.session_description.trim().is_empty() {
            problems.push(("session_description", "must not be empty".into()));
        }
        if self.device.trim().is_empty()
            || self.device.contains('/')
            || self.device.starts_with('.')
        {
            problems.push((
                "device",
                format!(
                    "{:?}: give a name without '/' that does not start with '.'",
                    self.device
                ),
            ));
        }
        for (field, v) in [
            ("excitation_lambda_nm", self.excitation_lambda_nm),
            ("emission_lambda_nm", self.emission_lambda_nm),
        ] {
            if !(v.is_finite() && v > 0.0) {
                problems.push((
                    field,
                    format!("{v}: must be a positive number of nanometres"),
                ));
            }
        }
        if let Some(px) = self.pixel_size_um
            && !(px.is_finite() && px > 0.0)
        {
            problems.push((
                "pixel_size_um",
                format!("{px}: must be a positive number of micrometres"),
            ));
        }
        if let Some(s) = &self.subject {
            if s.subject_id.trim().is_empty() {
                problems.push(("subject.subject_id", "must not be empty".into()));
            }
            if s.species.trim().is_empty() {
                problems.push((
                    "subject.species",
                    "is required with a subject (a Latin binomial such as \"Mus musculus\", or an NCBI taxonomy URI)".into(),
                ));
            }
            if !["M", "F", "U", "O"].contains(&s.sex.as_str()) {
                problems.push((
                    "subject.sex",
                    format!("{:?}: one of M, F, U (unknown) or O (other)", s.sex),
                ));
            }
            if !is_duration(&s.age) {
                problems.push((
                    "subject.age",
                    format!("{:?}: an ISO 8601 duration such as P90D", s.age),
                ));
            }
        }
        problems
    }
}

/// Checks an ISO 8601 date and time with a UTC offset: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM)`.
pub fn check_datetime(s: &str) -> Result<(), String> {
    let bad = || {
        Err(format!(
            "{s:?}: give an ISO 8601 date and time with a UTC offset, e.g. 2026-03-01T10:15:00+01:00"
        ))
    };
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .map(|d| d.iter().fold(0u32, |a, c| a * 10 + u32::from(c - b'0')))
    };
    let (Some(_), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = (
        digits(0..4),
        digits(5..7),
        digits(8..10),
        digits(11..13),
        digits(14..16),
        digits(17..19),
    ) else {
        return bad();
    };
    if b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b'T')
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return bad();
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return bad();
        }
        rest = &frac[n..];
    }
    let offset_ok = rest == "Z" || {
        let o = rest.as_bytes();
        o.len() == 6
            && (o[0] == b'+' || o[0] == b'-')
            && o[1..3].iter().all(u8::is_ascii_digit)
            && o[3] == b':'
            && o[4..6].iter().all(u8::is_ascii_digit)
    };
    if offset_ok { Ok(()) } else { bad() }
}

/// An ISO 8601 duration such as `P90D`, `P12W`, `P1Y2M`, `PT36H` (a range `P90D/P100D` too).
fn is_duration(s: &str) -> bool {
    s.split('/').all(|part| {
        let Some(body) = part.strip_prefix('P') else {
            return false;
        };
        let (date, time) = match body.split_once('T') {
            Some((d, t)) => (d, Some(t)),
            None => (body, None),
        };
        let fields = |text: &str, units: &str| -> Option<usize> {
            let mut count = 0;
            let mut number = String::new();
            let mut allowed = units;
            for c in text.chars() {
                if c.is_ascii_digit() || (c == '.' && !number.is_empty()) {
                    number.push(c);
                } else {
                    let at = allowed.find(c)?;
                    if number.is_empty() {
                        return None;
                    }
                    allowed = &allowed[at + 1..];
                    number.clear();
                    count += 1;
                }
            }
            number.is_empty().then_some(count)
        };
        let Some(d) = fields(date, "YMWD") else {
            return false;
        };
        match time {
            Some(t) => fields(t, "HMS").is_some_and(|n| n > 0),
            None => d > 0,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_need_an_offset() {
        for ok in [
            "2026-03-01T10:15:00+01:00",
            "2026-03-01T10:15:00Z",
            "2026-03-01T10:15:00.250-05:00",
        ] {
            assert_eq!(check_datetime(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "2026-03-01",
            "2026-03-01T10:15:00",
            "2026-13-01T10:15:00Z",
            "2026-03-01 10:15:00Z",
            "2026-03-01T10:15:00+0100",
            "2026-03-01T10:15:00.Z",
        ] {
            assert!(check_datetime(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        for ok in ["P90D", "P12W", "P1Y2M", "PT36H", "P1DT2H", "P90D/P100D"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "90D", "P", "PT", "PD", "P90", "P2D1Y", "P90X"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    #[test]
    fn check_names_every_problem() {
        let mut s = Session::new("2026-03-01T10:15:00+01:00");
        assert!(s.check().is_empty(), "{:?}", s.check());
        s.device = "a/b".into();
        s.subject = Some(Subject {
            subject_id: "m1".into(),
            species: String::new(),
            sex: "female".into(),
            age: "90 days".into(),
        });
        let fields: Vec<&str> = s.check().iter().map(|p| p.0).collect();
        assert_eq!(
            fields,
            ["device", "subject.species", "subject.sex", "subject.age"]
        );
    }

    #[test]
    fn json_round_trip_and_unknown_fields_refused() {
        let s = Session::new("2026-03-01T10:15:00Z");
        let v = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(v["raw"], "none");
        let back: Session = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, s);
        let mut v = serde_json::to_value(&s).unwrap_or_default();
        v["speceis"] = "x".into();
        assert!(serde_json::from_value::<Session>(v).is_err());
    }
}
