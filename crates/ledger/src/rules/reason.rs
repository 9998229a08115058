//! Every reason a transaction is rejected for, exactly as stored in the entry's `rejected`
//! column and shown by the API. The two that name the kind are tables indexed by the kind byte
//! ([`crate::tx::Meta::kind_byte`]), so that every reason stays a `&'static str`.

/// `[concat!("enroll ", $reason), ...]`: one reason per kind, in kind-byte order.
macro_rules! per_kind {
    ($reason:literal) => {
        [
            concat!("enroll ", $reason),
            concat!("ask ", $reason),
            concat!("link ", $reason),
            concat!("add_key ", $reason),
            concat!("revoke_key ", $reason),
            concat!("recover ", $reason),
            concat!("request_grant ", $reason),
            concat!("grant ", $reason),
            concat!("revoke ", $reason),
            concat!("add_record ", $reason),
            concat!("access ", $reason),
            concat!("request_erasure ", $reason),
            concat!("answer_erasure ", $reason),
        ]
    };
}

// Checks common to every kind.
pub const DUPLICATE: &str = "duplicate of an earlier transaction";
pub const EXPIRED: &str = "expired: block time is after the signature's not_after";
pub const NEEDS_PERSON_KEY: [&str; 13] = per_kind!("must be signed by the person's key");
pub const NEEDS_VALIDATOR: [&str; 13] = per_kind!("must be signed by a validator");
pub const SIGNER_KEY_NOT_OF_PERSON: &str = "signer key is not a key of this person";
pub const SIGNER_KIND_MISMATCH: &str = "signer kind does not match the key";
pub const SIGNER_KEY_REVOKED: &str = "signer key is revoked";
pub const SIGNER_KEY_WAITING: &str = "signer key is waiting for its recovery period";
pub const CUSTODIAL_NOT_HOME: &str = "custodial key is not held by the person's home";
pub const NOT_ACTING_PERSON: &str = "signer is not the person this transaction acts for";
pub const LABEL_TOO_LONG: &str = "key label longer than 64 characters";
pub const UNKNOWN_PERSON: &str = "unknown person";
pub const UNKNOWN_VALIDATOR: &str = "unknown validator";

// Identity: Enroll, Ask, Link, AddKey, RevokeKey, Recover.
pub const ENROLL_NOT_HOME: &str = "enrollment must be signed by the home validator";
pub const PERSON_ID_NOT_DERIVED: &str = "person id is not derived from the home and nonce";
pub const PERSON_ENROLLED: &str = "person already enrolled";
pub const DEPARTMENT: &str = "a doctor has a department of 1 to 64 characters, a patient none";
pub const DOCTOR_NAME: &str = "a doctor has a name of 1 to 64 characters, a patient none";
pub const ENROLL_KEYS: &str = "an enrollment lists 1 to 8 distinct keys";
pub const KEY_REGISTERED: &str = "key already registered";
pub const VALIDATOR_IS_HOME: &str = "validator is the person's home";
pub const ALREADY_LINKED: &str = "already linked";
pub const CUSTODIAL_ASK_NOT_HOME: &str = "only the home may offer a custodial key";
pub const DOCTOR_KEY_NOT_HOME: &str = "a doctor's keys are made at their home's page";
pub const TOO_MANY_ASKS: &str = "too many pending asks from this validator for this person";
pub const ASK_NOT_PENDING: &str = "ask is not pending";
pub const ASK_MISMATCH: &str = "ask does not match";
pub const TOO_MANY_KEYS: &str = "the person holds 8 keys already";
pub const DEVICE_KEY_NEEDS_ASK: &str =
    "a key added with a device key needs an ask from the page that made it";
pub const CUSTODIAL_KEY_NEEDS_HOME_ASK: &str =
    "a custodial key is added with a device key, answering the home's ask";
pub const KEY_ORIGIN: &str =
    "a new key's origin is the validator that made it: the home, or the asking validator";
pub const KEY_NOT_OF_PERSON: &str = "key is not a key of this person";
pub const KEY_ALREADY_REVOKED: &str = "key already revoked";
pub const REVOKE_OTHER_ORIGIN: &str =
    "a key made at another hospital's page revokes only keys made there";
pub const WOULD_LEAVE_NO_KEY: &str = "would leave the person without a key: use recovery";
// A young key's wait stays cancellable (docs/SECURITY.md, "Confidential records", §4.2).
pub const YOUNG_KEY_REVOKES_YOUNG_ONLY: &str =
    "a key added on a password alone revokes only waiting keys before its wait ends";
pub const KEEPS_KEY_THAT_CANCELS: &str =
    "while a new key waits, the last key of the home that can revoke it stays";
pub const RECOVER_NOT_HOME: &str = "only the home may start a recovery";
pub const RECOVERY_PENDING: &str = "a recovery is already pending";
pub const RECOVER_CUSTODIAL_ONLY: &str = "a recovery re-enrolls a custodial key";

// Consent: RequestGrant, Grant, Revoke.
pub const NOT_A_PATIENT: &str = "patient is not an enrolled patient";
pub const NOT_A_DOCTOR: &str = "doctor is not an enrolled doctor";
pub const READ_DURATION: &str = "read grant lasts 1 minute to 30 days";
pub const TOO_MANY_REQUESTS_DOCTOR: &str =
    "too many pending requests from this doctor to this patient";
pub const TOO_MANY_REQUESTS_HOSPITAL: &str =
    "too many pending requests from this hospital to this patient";
pub const ATTESTATION_MISMATCH: &str = "attested does not match the signing key";
pub const REQUEST_NOT_PENDING: &str = "request is not pending";
pub const GRANT_REQUEST_MISMATCH: &str = "grant does not match the request";
pub const GRANT_USED: &str = "grant already used";
pub const GRANT_REVOKED: &str = "grant already revoked";
pub const GRANT_EXPIRED: &str = "grant already expired";
pub const NO_SUCH_TARGET: &str = "no such grant or pending request of this patient";
// Read grants and erasure requests leave the home only through a key of the home
// (docs/SECURITY.md, "Confidential records", §4.2). The stored reason is fixed; the date the
// wait of a young key ends is its `KeyRow::young_until_ms`, which the API shows with it.
pub const READ_GRANT_NOT_HOME_KEY: &str = "a read grant is signed with a key of the patient's home";
pub const READ_GRANT_IN_PERSON_NOT_HOME_DOCTOR: &str =
    "a read grant in person is for a doctor of the patient's home";
pub const YOUNG_KEY: &str =
    "a key added on a password alone shares nothing with another hospital before its wait ends";

// Records: AddRecord, Access.
pub const NOT_OWN_DEPARTMENT: &str = "department is not the doctor's own";
pub const NO_SUCH_GRANT: &str = "no such grant";
pub const NOT_A_WRITE_GRANT: &str = "grant is not a write grant for this patient and doctor";
pub const GRANT_WAS_REVOKED: &str = "grant revoked";
pub const GRANT_HAS_EXPIRED: &str = "grant expired";
pub const ACCESS_NOT_SERVING: &str = "an access entry is signed by the validator that served it";
pub const OWN_READ_ONLY: &str = "a read without a grant is the patient's own";
pub const NOT_SERVED_HERE: &str = "serving validator holds no login of this patient";
pub const DOCTOR_READS_AT_HOME: &str = "a doctor reads through their home validator";
pub const NOT_A_READ_GRANT: &str = "grant is not a read grant for this patient and reader";

// Erasure: RequestErasure, AnswerErasure.
pub const ERASURE_NOT_HOME_KEY: &str = "an erasure is requested with a key of the patient's home";
pub const NO_SUCH_SEALED: &str = "no such sealed transaction of this patient";
pub const ALREADY_ERASED: &str = "transaction already erased";
pub const ERASURE_PENDING: &str = "an erasure of this transaction is already pending";
pub const ERASURE_NOT_PENDING: &str = "erasure request is not pending";
pub const ERASURE_NOT_SEALER: &str =
    "an erasure is answered by the hospital that sealed the transaction";

/// Whether a transaction rejected for `reason` may pass once later blocks reach this chain: it
/// names something (a person, a key, a grant, a request, an ask, a sealed entry, an erasure
/// request) that is not on the chain yet. A validator a block behind its peers refuses such a
/// transaction, which its peer admitted, until it catches up.
pub fn may_pass_later(reason: &str) -> bool {
    [
        SIGNER_KEY_NOT_OF_PERSON,
        UNKNOWN_PERSON,
        NOT_A_PATIENT,
        NOT_A_DOCTOR,
        KEY_NOT_OF_PERSON,
        ASK_NOT_PENDING,
        NO_SUCH_TARGET,
        REQUEST_NOT_PENDING,
        NO_SUCH_GRANT,
        NO_SUCH_SEALED,
        ERASURE_NOT_PENDING,
    ]
    .contains(&reason)
}

/// Every reason above, for tests that check each is distinct.
pub fn all() -> Vec<&'static str> {
    let mut all = vec![
        DUPLICATE,
        EXPIRED,
        SIGNER_KEY_NOT_OF_PERSON,
        SIGNER_KIND_MISMATCH,
        SIGNER_KEY_REVOKED,
        SIGNER_KEY_WAITING,
        CUSTODIAL_NOT_HOME,
        NOT_ACTING_PERSON,
        LABEL_TOO_LONG,
        UNKNOWN_PERSON,
        UNKNOWN_VALIDATOR,
        ENROLL_NOT_HOME,
        PERSON_ID_NOT_DERIVED,
        PERSON_ENROLLED,
        DEPARTMENT,
        DOCTOR_NAME,
        ENROLL_KEYS,
        KEY_REGISTERED,
        VALIDATOR_IS_HOME,
        ALREADY_LINKED,
        CUSTODIAL_ASK_NOT_HOME,
        DOCTOR_KEY_NOT_HOME,
        TOO_MANY_ASKS,
        ASK_NOT_PENDING,
        ASK_MISMATCH,
        TOO_MANY_KEYS,
        DEVICE_KEY_NEEDS_ASK,
        CUSTODIAL_KEY_NEEDS_HOME_ASK,
        KEY_ORIGIN,
        KEY_NOT_OF_PERSON,
        KEY_ALREADY_REVOKED,
        REVOKE_OTHER_ORIGIN,
        WOULD_LEAVE_NO_KEY,
        YOUNG_KEY_REVOKES_YOUNG_ONLY,
        KEEPS_KEY_THAT_CANCELS,
        RECOVER_NOT_HOME,
        RECOVERY_PENDING,
        RECOVER_CUSTODIAL_ONLY,
        NOT_A_PATIENT,
        NOT_A_DOCTOR,
        READ_DURATION,
        TOO_MANY_REQUESTS_DOCTOR,
        TOO_MANY_REQUESTS_HOSPITAL,
        ATTESTATION_MISMATCH,
        REQUEST_NOT_PENDING,
        GRANT_REQUEST_MISMATCH,
        GRANT_USED,
        GRANT_REVOKED,
        GRANT_EXPIRED,
        NO_SUCH_TARGET,
        NOT_OWN_DEPARTMENT,
        NO_SUCH_GRANT,
        NOT_A_WRITE_GRANT,
        GRANT_WAS_REVOKED,
        GRANT_HAS_EXPIRED,
        ACCESS_NOT_SERVING,
        OWN_READ_ONLY,
        NOT_SERVED_HERE,
        DOCTOR_READS_AT_HOME,
        NOT_A_READ_GRANT,
        READ_GRANT_NOT_HOME_KEY,
        READ_GRANT_IN_PERSON_NOT_HOME_DOCTOR,
        YOUNG_KEY,
        ERASURE_NOT_HOME_KEY,
        NO_SUCH_SEALED,
        ALREADY_ERASED,
        ERASURE_PENDING,
        ERASURE_NOT_PENDING,
        ERASURE_NOT_SEALER,
    ];
    all.extend(NEEDS_PERSON_KEY);
    all.extend(NEEDS_VALIDATOR);
    all
}
