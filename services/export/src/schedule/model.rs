//! A schedule as the service keeps it, and the one place requests become schedules: every
//! field checked, named when wrong.

use std::str::FromStr;

use chrono::{DateTime, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use haven_proto::export::v1 as pb;

use super::slots::{Cadence, Rule};
use crate::catalog;
use crate::error::ExportError;

haven_db::text_enum! {
    /// `scheduled_exports.frequency`.
    pub enum Frequency in "scheduled_exports.frequency" {
        Weekly = "weekly",
        Monthly = "monthly",
    }
}

haven_db::text_enum! {
    /// `scheduled_exports.date_range_type`.
    pub enum RangeType in "scheduled_exports.date_range_type" {
        LastWeek = "last_week",
        LastMonth = "last_month",
        AllTime = "all_time",
    }
}

haven_db::text_enum! {
    /// `scheduled_exports.delivery_method`.
    pub enum Delivery in "scheduled_exports.delivery_method" {
        Email = "email",
        Download = "download",
    }
}

haven_db::text_enum! {
    /// `scheduled_exports.format`: the file formats a schedule can deliver.
    pub enum ScheduleFormat in "scheduled_exports.format" {
        Csv = "csv",
        Json = "json",
        Ndjson = "ndjson",
    }
}

/// What a user chooses, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub export_type: String,
    pub format: ScheduleFormat,
    pub fields: Vec<String>,
    pub range: RangeType,
    pub frequency: Frequency,
    pub weekday: Option<i16>,
    pub day_of_month: Option<i16>,
    pub time_of_day: NaiveTime,
    pub time_zone: String,
    pub enabled: bool,
    pub delivery: Delivery,
    pub delivery_email: Option<String>,
}

/// A stored schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: uuid::Uuid,
    pub tenant_id: uuid::Uuid,
    pub user_id: String,
    pub settings: Settings,
    pub last_run_at: Option<DateTime<Utc>>,
    pub next_run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Longest address accepted (RFC 5321's path limit).
const MAX_EMAIL_LEN: usize = 254;

/// A plain `local@domain.tld` address: what Resend accepts, without display names.
fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= MAX_EMAIL_LEN
        && !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && email.chars().all(|c| {
            c.is_ascii_graphic()
                && !matches!(
                    c,
                    '<' | '>' | '(' | ')' | ',' | ';' | ':' | '\\' | '"' | '[' | ']'
                )
        })
}

fn weekday_of(iso: i16) -> Weekday {
    match iso {
        2 => Weekday::Tue,
        3 => Weekday::Wed,
        4 => Weekday::Thu,
        5 => Weekday::Fri,
        6 => Weekday::Sat,
        7 => Weekday::Sun,
        _ => Weekday::Mon,
    }
}

impl Settings {
    /// Checks a request's schedule; `InvalidArgument` names the first bad field.
    pub fn from_proto(p: &pb::ScheduledExport) -> Result<Settings, ExportError> {
        let ty = catalog::find(&p.export_type).ok_or_else(|| {
            ExportError::invalid(
                "export_type",
                format!("unknown export type `{}`", p.export_type),
            )
        })?;
        for field in &p.fields {
            if ty.field(field).is_none() {
                return Err(ExportError::invalid(
                    "fields",
                    format!("`{field}` is not a field of {}", ty.key),
                ));
            }
        }
        let format = match pb::ExportFormat::try_from(p.format) {
            Ok(pb::ExportFormat::Csv) => ScheduleFormat::Csv,
            Ok(pb::ExportFormat::Json) => ScheduleFormat::Json,
            Ok(pb::ExportFormat::Ndjson) => ScheduleFormat::Ndjson,
            _ => {
                return Err(ExportError::invalid(
                    "format",
                    "must be CSV, JSON or NDJSON",
                ));
            }
        };
        let range = match pb::DateRangePreset::try_from(p.date_range) {
            Ok(pb::DateRangePreset::LastWeek) => RangeType::LastWeek,
            Ok(pb::DateRangePreset::LastMonth) => RangeType::LastMonth,
            Ok(pb::DateRangePreset::AllTime) => RangeType::AllTime,
            _ => {
                return Err(ExportError::invalid(
                    "date_range",
                    "must be LAST_WEEK, LAST_MONTH or ALL_TIME",
                ));
            }
        };
        let (frequency, weekday, day_of_month) = match pb::ScheduleFrequency::try_from(p.frequency)
        {
            Ok(pb::ScheduleFrequency::Weekly) => {
                if p.day_of_month != 0 {
                    return Err(ExportError::invalid(
                        "day_of_month",
                        "is for monthly schedules; use weekday",
                    ));
                }
                let day = match p.weekday {
                    0 => 1,
                    d @ 1..=7 => d,
                    _ => {
                        return Err(ExportError::invalid(
                            "weekday",
                            "must be 1 (Monday) to 7 (Sunday)",
                        ));
                    }
                };
                (Frequency::Weekly, Some(day as i16), None)
            }
            Ok(pb::ScheduleFrequency::Monthly) => {
                if p.weekday != 0 {
                    return Err(ExportError::invalid(
                        "weekday",
                        "is for weekly schedules; use day_of_month",
                    ));
                }
                let day = match p.day_of_month {
                    0 => 1,
                    d @ 1..=31 => d,
                    _ => {
                        return Err(ExportError::invalid(
                            "day_of_month",
                            "must be 1 to 31 (29–31 run on a shorter month's last day)",
                        ));
                    }
                };
                (Frequency::Monthly, None, Some(day as i16))
            }
            _ => {
                return Err(ExportError::invalid(
                    "frequency",
                    "must be WEEKLY or MONTHLY",
                ));
            }
        };
        let time_of_day = match p.time_of_day.trim() {
            "" => NaiveTime::from_hms_opt(8, 0, 0).unwrap_or(NaiveTime::MIN),
            t => NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| {
                ExportError::invalid("time_of_day", format!("`{t}` is not a 24-hour HH:MM time"))
            })?,
        };
        let time_zone = match p.time_zone.trim() {
            "" => "UTC".to_owned(),
            z => Tz::from_str(z)
                .map_err(|_| {
                    ExportError::invalid(
                        "time_zone",
                        format!("`{z}` is not an IANA time zone (e.g. Europe/Paris)"),
                    )
                })?
                .name()
                .to_owned(),
        };
        let (delivery, delivery_email) = match pb::DeliveryMethod::try_from(p.delivery_method) {
            Ok(pb::DeliveryMethod::Email) => {
                let email = p.delivery_email.trim();
                if !valid_email(email) {
                    return Err(ExportError::invalid(
                        "delivery_email",
                        "must be an email address (name@example.com)",
                    ));
                }
                (Delivery::Email, Some(email.to_owned()))
            }
            Ok(pb::DeliveryMethod::Download) => {
                if !p.delivery_email.trim().is_empty() {
                    return Err(ExportError::invalid(
                        "delivery_email",
                        "is for EMAIL delivery; leave it empty for DOWNLOAD",
                    ));
                }
                (Delivery::Download, None)
            }
            _ => {
                return Err(ExportError::invalid(
                    "delivery_method",
                    "must be EMAIL or DOWNLOAD",
                ));
            }
        };
        Ok(Settings {
            export_type: ty.key.to_owned(),
            format,
            fields: p.fields.clone(),
            range,
            frequency,
            weekday,
            day_of_month,
            time_of_day,
            time_zone,
            enabled: p.enabled,
            delivery,
            delivery_email,
        })
    }

    /// The timing rule; the zone was checked when the settings were made.
    pub fn rule(&self) -> Result<Rule, ExportError> {
        let zone = Tz::from_str(&self.time_zone).map_err(|_| {
            ExportError::invalid(
                "time_zone",
                format!("`{}` is not an IANA time zone", self.time_zone),
            )
        })?;
        let cadence = match self.frequency {
            Frequency::Weekly => Cadence::Weekly(weekday_of(self.weekday.unwrap_or(1))),
            Frequency::Monthly => {
                Cadence::Monthly(u32::try_from(self.day_of_month.unwrap_or(1)).unwrap_or(1))
            }
        };
        Ok(Rule {
            cadence,
            time: self.time_of_day,
            zone,
        })
    }

    /// Whether a change from `before` moves the schedule's slots.
    pub fn timing_differs(&self, before: &Settings) -> bool {
        (
            self.frequency,
            self.weekday,
            self.day_of_month,
            self.time_of_day,
            &self.time_zone,
        ) != (
            before.frequency,
            before.weekday,
            before.day_of_month,
            before.time_of_day,
            &before.time_zone,
        )
    }
}

impl Schedule {
    pub fn to_proto(&self) -> pb::ScheduledExport {
        let s = &self.settings;
        let ts = haven_proto::time::timestamp;
        pb::ScheduledExport {
            id: self.id.to_string(),
            tenant_id: self.tenant_id.to_string(),
            user_id: self.user_id.clone(),
            export_type: s.export_type.clone(),
            format: match s.format {
                ScheduleFormat::Csv => pb::ExportFormat::Csv,
                ScheduleFormat::Json => pb::ExportFormat::Json,
                ScheduleFormat::Ndjson => pb::ExportFormat::Ndjson,
            } as i32,
            fields: s.fields.clone(),
            date_range: match s.range {
                RangeType::LastWeek => pb::DateRangePreset::LastWeek,
                RangeType::LastMonth => pb::DateRangePreset::LastMonth,
                RangeType::AllTime => pb::DateRangePreset::AllTime,
            } as i32,
            frequency: match s.frequency {
                Frequency::Weekly => pb::ScheduleFrequency::Weekly,
                Frequency::Monthly => pb::ScheduleFrequency::Monthly,
            } as i32,
            enabled: s.enabled,
            delivery_method: match s.delivery {
                Delivery::Email => pb::DeliveryMethod::Email,
                Delivery::Download => pb::DeliveryMethod::Download,
            } as i32,
            delivery_email: s.delivery_email.clone().unwrap_or_default(),
            last_run_at: self.last_run_at.map(ts),
            next_run_at: Some(ts(self.next_run_at)),
            created_at: Some(ts(self.created_at)),
            updated_at: Some(ts(self.updated_at)),
            time_of_day: s.time_of_day.format("%H:%M").to_string(),
            time_zone: s.time_zone.clone(),
            weekday: s.weekday.map(i32::from).unwrap_or(0),
            day_of_month: s.day_of_month.map(i32::from).unwrap_or(0),
        }
    }
}

/// `update` with the fields named in `mask` taken from `change`.
pub fn merge(
    mut current: pb::ScheduledExport,
    change: &pb::ScheduledExport,
    mask: &[String],
) -> Result<pb::ScheduledExport, ExportError> {
    if mask.is_empty() {
        return Err(ExportError::invalid(
            "update_mask",
            "name the fields to change (e.g. [\"enabled\"])",
        ));
    }
    for path in mask {
        match path.as_str() {
            "export_type" => current.export_type = change.export_type.clone(),
            "format" => current.format = change.format,
            "fields" => current.fields = change.fields.clone(),
            "date_range" => current.date_range = change.date_range,
            "frequency" => {
                current.frequency = change.frequency;
                // A new cadence takes its own day, or the default.
                current.weekday = change.weekday;
                current.day_of_month = change.day_of_month;
            }
            "weekday" => current.weekday = change.weekday,
            "day_of_month" => current.day_of_month = change.day_of_month,
            "time_of_day" => current.time_of_day = change.time_of_day.clone(),
            "time_zone" => current.time_zone = change.time_zone.clone(),
            "enabled" => current.enabled = change.enabled,
            "delivery_method" => {
                current.delivery_method = change.delivery_method;
                current.delivery_email = change.delivery_email.clone();
            }
            "delivery_email" => current.delivery_email = change.delivery_email.clone(),
            other => {
                return Err(ExportError::invalid(
                    "update_mask",
                    format!("`{other}` cannot be changed"),
                ));
            }
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::ScheduledExport {
        pb::ScheduledExport {
            export_type: "orders".into(),
            format: pb::ExportFormat::Csv as i32,
            date_range: pb::DateRangePreset::LastWeek as i32,
            frequency: pb::ScheduleFrequency::Weekly as i32,
            delivery_method: pb::DeliveryMethod::Email as i32,
            delivery_email: "ops@example.com".into(),
            enabled: true,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_fill_the_optional_timing() {
        let s = Settings::from_proto(&valid()).unwrap();
        assert_eq!(s.time_zone, "UTC");
        assert_eq!(s.time_of_day, NaiveTime::from_hms_opt(8, 0, 0).unwrap());
        assert_eq!(s.weekday, Some(1));
        assert_eq!(s.day_of_month, None);
    }

    #[test]
    fn each_bad_field_is_named() {
        type Edit = Box<dyn Fn(&mut pb::ScheduledExport)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("export_type", Box::new(|p| p.export_type = "nope".into())),
            (
                "fields",
                Box::new(|p| p.fields = vec!["total".into(), "secret".into()]),
            ),
            (
                "format",
                Box::new(|p| p.format = pb::ExportFormat::Pdf as i32),
            ),
            ("format", Box::new(|p| p.format = 0)),
            ("date_range", Box::new(|p| p.date_range = 0)),
            ("frequency", Box::new(|p| p.frequency = 0)),
            ("weekday", Box::new(|p| p.weekday = 8)),
            ("day_of_month", Box::new(|p| p.day_of_month = 3)),
            ("time_of_day", Box::new(|p| p.time_of_day = "25:00".into())),
            ("time_of_day", Box::new(|p| p.time_of_day = "8am".into())),
            (
                "time_zone",
                Box::new(|p| p.time_zone = "Mars/Olympus".into()),
            ),
            (
                "delivery_email",
                Box::new(|p| p.delivery_email = "not an address".into()),
            ),
            (
                "delivery_email",
                Box::new(|p| p.delivery_email = "a@b".into()),
            ),
            (
                "delivery_email",
                Box::new(|p| p.delivery_email = "Ops <ops@example.com>".into()),
            ),
            (
                "delivery_email",
                Box::new(|p| p.delivery_email = String::new()),
            ),
            ("delivery_method", Box::new(|p| p.delivery_method = 0)),
        ];
        for (field, edit) in cases {
            let mut p = valid();
            edit(&mut p);
            match Settings::from_proto(&p) {
                Err(ExportError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut monthly = valid();
        monthly.frequency = pb::ScheduleFrequency::Monthly as i32;
        monthly.weekday = 2;
        assert!(matches!(
            Settings::from_proto(&monthly),
            Err(ExportError::Invalid {
                field: "weekday",
                ..
            })
        ));
        monthly.weekday = 0;
        monthly.day_of_month = 32;
        assert!(matches!(
            Settings::from_proto(&monthly),
            Err(ExportError::Invalid {
                field: "day_of_month",
                ..
            })
        ));
        monthly.day_of_month = 31;
        assert_eq!(
            Settings::from_proto(&monthly).unwrap().day_of_month,
            Some(31)
        );
        let mut download = valid();
        download.delivery_method = pb::DeliveryMethod::Download as i32;
        assert!(matches!(
            Settings::from_proto(&download),
            Err(ExportError::Invalid {
                field: "delivery_email",
                ..
            })
        ));
        download.delivery_email.clear();
        assert_eq!(
            Settings::from_proto(&download).unwrap().delivery,
            Delivery::Download
        );
    }

    #[test]
    fn a_mask_changes_only_what_it_names() {
        let current = valid();
        let change = pb::ScheduledExport {
            enabled: false,
            export_type: "leads".into(),
            ..Default::default()
        };
        let merged = merge(current.clone(), &change, &["enabled".into()]).unwrap();
        assert!(!merged.enabled);
        assert_eq!(merged.export_type, "orders");
        assert!(matches!(
            merge(current.clone(), &change, &[]),
            Err(ExportError::Invalid {
                field: "update_mask",
                ..
            })
        ));
        assert!(matches!(
            merge(current, &change, &["id".into()]),
            Err(ExportError::Invalid {
                field: "update_mask",
                ..
            })
        ));
    }
}
