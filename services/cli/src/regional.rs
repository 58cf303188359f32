//! `lienthong regional`: the clinician query API of a regional store from a shell (every
//! method, as a table or as JSON), and rebuilding a store from the topics.

use std::process::ExitCode;
use std::sync::Arc;

use lienthong_core::XmlDateTime;
use lienthong_grpc::client::Unreached;
use lienthong_grpc::{RegionalConnection, authorized};
use lienthong_kafka::KafkaArgs;
use lienthong_proto::v1 as pb;
use lienthong_regional_store::config::RegionalConfig;
use lienthong_registry::{RegistryArgs, WireCodec};
use prost::Message;

use crate::table::{Align, Table};

/// Regional store commands.
#[derive(Debug, clap::Subcommand)]
pub enum RegionalCommand {
    /// Everything the region holds about one patient (GetPatientRecord).
    Record {
        /// The patient's citizen ID (or old ID card / passport number), as on SO_CCCD.
        #[arg(long)]
        citizen_id: String,
        /// The number on the insurance card the patient presents: attests presence when the
        /// facility has no care relationship with the patient yet.
        #[arg(long)]
        insurance_card: Option<String>,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Referrals addressed to a facility, newest first (ListIncomingReferrals).
    Referrals {
        /// Receiving facility: the caller, or one of its hub's facilities.
        #[arg(long)]
        facility: String,
        /// Only referrals with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only referrals issued on or after this day (yyyymmdd).
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Appointments at a facility between two days (ListAppointments).
    Appointments {
        /// Facility: the caller, or one of its hub's facilities.
        #[arg(long)]
        facility: String,
        /// First day (yyyymmdd), inclusive.
        #[arg(long)]
        from: String,
        /// Last day (yyyymmdd), inclusive.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// A patient's recent lab reports, newest first (FindReusableLabResults).
    LabReports {
        /// The patient's citizen ID.
        #[arg(long)]
        citizen_id: String,
        /// The number on the insurance card the patient presents (attests presence).
        #[arg(long)]
        insurance_card: Option<String>,
        /// Service code (MA_DICH_VU) wanted; repeat for several; none means any.
        #[arg(long = "service")]
        services: Vec<String>,
        /// Only results at most this many days old (the store's default is 30).
        #[arg(long)]
        max_age_days: Option<u32>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Mark a referred patient as received at the caller's facility (AcknowledgeReferral).
    Acknowledge {
        /// The referral's document id (`referral/<issuer>/<slip number>`).
        #[arg(long)]
        referral: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[command(flatten)]
        connection: RegionalConnection,
    },
    /// Replay the topics from the beginning into a fresh store beside the live one
    /// (`<data-dir>/region-<code>.rebuild`); the live store keeps serving and swaps the
    /// rebuilt one in within seconds (a stopped store at its next start).
    Rebuild {
        /// Region (2025 province code) to rebuild.
        #[arg(long)]
        region: String,
        #[command(flatten)]
        config: Box<RegionalConfig>,
        #[command(flatten, next_help_heading = "Kafka connection")]
        kafka: KafkaArgs,
        #[command(flatten, next_help_heading = "Schema registry")]
        registry: RegistryArgs,
    },
}

/// What every read states and how its answer is shown.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// Why the data is read (Decree 13/2023: purpose-bound processing); recorded in the audit.
    #[arg(long, value_enum)]
    purpose: PurposeArg,
    /// Output format: a table for people, canonical protobuf JSON of the answer for scripts.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    #[command(flatten)]
    connection: RegionalConnection,
}

/// Paging of list calls.
#[derive(Debug, clap::Args)]
pub struct PageArgs {
    /// At most this many items (the store's default is 50, its maximum 500).
    #[arg(long)]
    page_size: Option<u32>,
    /// The page token a previous call printed; none for the first page.
    #[arg(long)]
    page_token: Option<String>,
}

impl PageArgs {
    fn request(&self) -> Option<pb::PageRequest> {
        Some(pb::PageRequest {
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token.clone().unwrap_or_default(),
        })
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns for people.
    Table,
    /// The answer as canonical protobuf JSON, one object.
    Json,
}

/// Why patient data is read.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PurposeArg {
    /// Treating the patient.
    Treatment,
    /// Emergency care.
    Emergency,
    /// Continuity of care after a referral.
    ContinuityOfCare,
}

impl From<PurposeArg> for i32 {
    fn from(p: PurposeArg) -> Self {
        (match p {
            PurposeArg::Treatment => pb::PurposeOfUse::Treatment,
            PurposeArg::Emergency => pb::PurposeOfUse::Emergency,
            PurposeArg::ContinuityOfCare => pb::PurposeOfUse::ContinuityOfCare,
        }) as i32
    }
}

/// A referral status to filter on.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum StatusArg {
    /// Issued, patient not yet received.
    Pending,
    /// Patient received.
    Received,
    /// Cancelled by the issuer.
    Cancelled,
}

impl From<StatusArg> for i32 {
    fn from(s: StatusArg) -> Self {
        (match s {
            StatusArg::Pending => pb::ReferralStatus::Pending,
            StatusArg::Received => pb::ReferralStatus::Received,
            StatusArg::Cancelled => pb::ReferralStatus::Cancelled,
        }) as i32
    }
}

/// Runs a regional command.
pub async fn run(cmd: RegionalCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RegionalCommand::Rebuild {
            region,
            config,
            kafka,
            registry,
        } => {
            kafka.probe().await?;
            let codec = Arc::new(WireCodec::new(&registry)?);
            let docs =
                lienthong_regional_store::rebuild::rebuild(&config, &region, &kafka, codec).await?;
            println!(
                "region {region} rebuilt in {}: {docs} documents; {}",
                config.data_dir.display(),
                lienthong_regional_store::rebuild::SWAPPED_IN
            );
            Ok(ExitCode::SUCCESS)
        }
        RegionalCommand::Record {
            citizen_id,
            insurance_card,
            query,
        } => {
            let request = pb::GetPatientRecordRequest {
                citizen_id,
                purpose: query.purpose.into(),
                insurance_card_number: insurance_card.unwrap_or_default(),
            };
            let (mut client, token) = connect(&query.connection)?;
            let answer = client
                .get_patient_record(authorized(token.as_deref(), request)?)
                .await
                .map_err(|s| call_failed(&query.connection, s))?
                .into_inner();
            show(
                query.format,
                "lienthong.v1.GetPatientRecordResponse",
                &answer,
                || {
                    let mut t = documents_table();
                    for r in &answer.referrals {
                        referral_row(&mut t, r);
                    }
                    for a in &answer.appointments {
                        appointment_row(&mut t, a);
                    }
                    for l in &answer.lab_results {
                        lab_row(&mut t, l);
                    }
                    (t, String::new())
                },
            )
        }
        RegionalCommand::Referrals {
            facility,
            status,
            since,
            page,
            query,
        } => {
            let request = pb::ListIncomingReferralsRequest {
                facility_code: facility,
                status: status.map_or(0, i32::from),
                since: since.unwrap_or_default(),
                page: page.request(),
                purpose: query.purpose.into(),
            };
            let (mut client, token) = connect(&query.connection)?;
            let answer = client
                .list_incoming_referrals(authorized(token.as_deref(), request)?)
                .await
                .map_err(|s| call_failed(&query.connection, s))?
                .into_inner();
            show(
                query.format,
                "lienthong.v1.ListIncomingReferralsResponse",
                &answer,
                || {
                    let mut t = documents_table();
                    for r in &answer.referrals {
                        referral_row(&mut t, r);
                    }
                    (t, answer.next_page_token.clone())
                },
            )
        }
        RegionalCommand::Appointments {
            facility,
            from,
            to,
            page,
            query,
        } => {
            let request = pb::ListAppointmentsRequest {
                facility_code: facility,
                from,
                to,
                page: page.request(),
                purpose: query.purpose.into(),
            };
            let (mut client, token) = connect(&query.connection)?;
            let answer = client
                .list_appointments(authorized(token.as_deref(), request)?)
                .await
                .map_err(|s| call_failed(&query.connection, s))?
                .into_inner();
            show(
                query.format,
                "lienthong.v1.ListAppointmentsResponse",
                &answer,
                || {
                    let mut t = documents_table();
                    for a in &answer.appointments {
                        appointment_row(&mut t, a);
                    }
                    (t, answer.next_page_token.clone())
                },
            )
        }
        RegionalCommand::LabReports {
            citizen_id,
            insurance_card,
            services,
            max_age_days,
            page,
            query,
        } => {
            let request = pb::FindReusableLabResultsRequest {
                citizen_id,
                service_codes: services,
                max_age_days: max_age_days.unwrap_or(0),
                page: page.request(),
                purpose: query.purpose.into(),
                insurance_card_number: insurance_card.unwrap_or_default(),
            };
            let (mut client, token) = connect(&query.connection)?;
            let answer = client
                .find_reusable_lab_results(authorized(token.as_deref(), request)?)
                .await
                .map_err(|s| call_failed(&query.connection, s))?
                .into_inner();
            show(
                query.format,
                "lienthong.v1.FindReusableLabResultsResponse",
                &answer,
                || {
                    let mut t = documents_table();
                    for l in &answer.lab_results {
                        lab_row(&mut t, l);
                    }
                    (t, answer.next_page_token.clone())
                },
            )
        }
        RegionalCommand::Acknowledge {
            referral,
            format,
            connection,
        } => {
            let request = pb::AcknowledgeReferralRequest {
                referral_document_id: referral.clone(),
            };
            let (mut client, token) = connect(&connection)?;
            let answer = client
                .acknowledge_referral(authorized(token.as_deref(), request)?)
                .await
                .map_err(|s| call_failed(&connection, s))?
                .into_inner();
            show(
                format,
                "lienthong.v1.AcknowledgeReferralResponse",
                &answer,
                || {
                    let mut t = Table::new(&[
                        ("REFERRAL", Align::Left),
                        ("RECEIPT TOPIC", Align::Left),
                        ("PARTITION", Align::Right),
                        ("OFFSET", Align::Right),
                    ]);
                    t.row([
                        referral.clone(),
                        answer.topic.clone(),
                        answer.partition.to_string(),
                        answer.offset.to_string(),
                    ]);
                    (t, String::new())
                },
            )
        }
    }
}

type Client =
    pb::regional_query_service_client::RegionalQueryServiceClient<tonic::transport::Channel>;

/// A failed call as the error to show: why the store was not reached, or its own answer.
fn call_failed(connection: &RegionalConnection, status: tonic::Status) -> anyhow::Error {
    match Unreached::of(&connection.endpoint(), status) {
        Ok(unreached) => anyhow::Error::new(unreached),
        Err(status) => anyhow::Error::new(status),
    }
}

fn connect(connection: &RegionalConnection) -> anyhow::Result<(Client, Option<String>)> {
    Ok((connection.client()?, connection.endpoint().token()?))
}

/// Prints `answer` as JSON, or as the table `table` builds (with the next page's token, if
/// any, on stderr so that stdout stays the table).
fn show<M: Message>(
    format: Format,
    full_name: &str,
    answer: &M,
    table: impl FnOnce() -> (Table, String),
) -> anyhow::Result<ExitCode> {
    match format {
        Format::Json => {
            let json = lienthong_proto::json::to_json(full_name, &answer.encode_to_vec())
                .map_err(anyhow::Error::msg)?;
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Format::Table => {
            let (t, next) = table();
            t.print();
            eprintln!("{} item(s)", t.len());
            if !next.is_empty() {
                eprintln!("more: run again with --page-token {next}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn documents_table() -> Table {
    Table::new(&[
        ("KIND", Align::Left),
        ("DOCUMENT", Align::Left),
        ("V", Align::Right),
        ("STATUS", Align::Left),
        ("DATE", Align::Left),
        ("FACILITY", Align::Left),
        ("PATIENT", Align::Left),
        ("DETAIL", Align::Left),
    ])
}

fn header_cells(h: Option<&pb::EventHeader>) -> (String, String, String) {
    let h = h.cloned().unwrap_or_default();
    let action = pb::Action::try_from(h.action)
        .map(|a| a.as_str_name().trim_start_matches("ACTION_").to_lowercase())
        .unwrap_or_default();
    (h.document_id, h.document_version.to_string(), action)
}

/// A document's date as a reader writes it (`2026-12-06 15:23`); digits that do not parse are
/// shown as they are.
fn date(d: Option<&pb::PartialDateTime>) -> String {
    d.map(|d| {
        XmlDateTime::from_proto(d).map_or_else(|_| d.value.clone(), |parsed| parsed.to_string())
    })
    .unwrap_or_default()
}

fn name(p: Option<&pb::Patient>) -> String {
    p.map(|p| p.full_name.clone()).unwrap_or_default()
}

fn referral_row(t: &mut Table, view: &pb::ReferralView) {
    let event = view.referral.clone().unwrap_or_default();
    let (doc, version, _) = header_cells(event.header.as_ref());
    let slip = event.slip.unwrap_or_default();
    let status = pb::ReferralStatus::try_from(view.status)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("REFERRAL_STATUS_")
                .to_lowercase()
        })
        .unwrap_or_default();
    let code = |f: Option<&pb::FacilityRef>| f.map(|f| f.code.clone()).unwrap_or_default();
    t.row([
        "referral".to_owned(),
        doc,
        version,
        status,
        date(slip.issued_at.as_ref()),
        format!(
            "{} → {}",
            code(slip.issuer.as_ref()),
            code(slip.receiving.as_ref())
        ),
        name(slip.patient.as_ref()),
        slip.diagnosis.map(|d| d.main_icd10).unwrap_or_default(),
    ]);
}

fn appointment_row(t: &mut Table, event: &pb::AppointmentEvent) {
    let (doc, version, action) = header_cells(event.header.as_ref());
    let a = event.appointment.clone().unwrap_or_default();
    t.row([
        "appointment".to_owned(),
        doc,
        version,
        action,
        date(a.appointment_at.as_ref()),
        a.facility.map(|f| f.code).unwrap_or_default(),
        name(a.patient.as_ref()),
        a.diagnosis.map(|d| d.main_icd10).unwrap_or_default(),
    ]);
}

fn lab_row(t: &mut Table, event: &pb::LabResultEvent) {
    let (doc, version, action) = header_cells(event.header.as_ref());
    let r = event.report.clone().unwrap_or_default();
    // Digits compare as the times they stand for (a shorter prefix is its earliest instant).
    let at = date(
        r.lines
            .iter()
            .filter_map(|l| l.result_at.as_ref())
            .max_by(|a, b| a.value.cmp(&b.value)),
    );
    let indicators: Vec<String> = r
        .lines
        .iter()
        .map(|l| {
            let value = l
                .value_numeric
                .as_ref()
                .map_or_else(|| l.value_text.clone(), |n| n.value.to_string());
            format!("{} {value} {}", l.indicator_code, l.unit)
                .trim_end()
                .to_owned()
        })
        .collect();
    t.row([
        "lab-result".to_owned(),
        doc,
        version,
        action,
        at,
        r.facility.map(|f| f.code).unwrap_or_default(),
        name(r.patient.as_ref()),
        format!("{}: {}", r.service_code, indicators.join(", ")),
    ]);
}
