//! The domain core of lienthong: Vietnamese health identifiers, provinces, validation of the
//! clinical documents, routing and pseudonymous patient keys. No I/O happens here.

pub mod datetime;
pub mod directory;
pub mod document_id;
pub mod event;
pub mod fixtures;
pub mod ids;
pub mod printable;
pub mod province;
pub mod pseudonym;
pub mod routing;
pub mod validation;

pub use datetime::{Precision, XmlDateTime};
pub use event::ClinicalEvent;
pub use ids::{
    CitizenId, FacilityCode, Icd10Code, IdError, InsuranceCardNo, PersonId, PractitionerLicence,
};
pub use province::{Province, ProvinceCode};
pub use pseudonym::{PatientKey, PatientKeyer, PseudonymError};
pub use routing::DocumentKind;
pub use validation::{Severity, ValidationContext, Violation};
