//! The exact table schemas. The feature pipeline is written against these names and
//! types: change them only together with it.

use polars::prelude::*;

pub const TS_UNIT: TimeUnit = TimeUnit::Milliseconds;

pub const EDUCATION_LEVELS: [&str; 5] = [
    "below_high_school",
    "high_school",
    "college",
    "bachelor",
    "master_plus",
];

pub const TX_KINDS: [&str; 8] = [
    "purchase",
    "refund",
    "utility_bill",
    "loan_disbursement",
    "loan_repayment",
    "transfer_in",
    "transfer_out",
    "salary",
];
pub const EVENTS: [&str; 6] = [
    "login",
    "device_change",
    "address_change",
    "password_reset",
    "failed_login",
    "phone_change",
];
pub const RELATION_KINDS: [&str; 4] = ["contact", "transfer", "family", "shared_device"];
pub const MERCHANT_CATEGORIES: [&str; 10] = [
    "groceries",
    "dining",
    "apparel",
    "electronics",
    "travel",
    "entertainment",
    "health",
    "education",
    "home",
    "online_gaming",
];

fn schema(fields: &[(&str, DataType)]) -> Schema {
    Schema::from_iter(
        fields
            .iter()
            .map(|(n, d)| Field::new((*n).into(), d.clone())),
    )
}

fn ts() -> DataType {
    DataType::Datetime(TS_UNIT, None)
}

pub fn users() -> Schema {
    schema(&[
        ("user_id", DataType::String),
        ("signup_date", DataType::Date),
        ("age", DataType::Int32),
        ("city_tier", DataType::Int32),
        ("real_name_verified", DataType::Boolean),
        ("education", DataType::String),
        ("education_verified", DataType::Boolean),
        ("social_security_months", DataType::Int32),
        ("housing_fund_months", DataType::Int32),
        ("phone_tenure_months", DataType::Int32),
        ("income_band", DataType::Int32),
    ])
}

pub fn transactions() -> Schema {
    schema(&[
        ("user_id", DataType::String),
        ("ts", ts()),
        ("kind", DataType::String),
        ("amount", DataType::Float64),
        ("merchant_category", DataType::String),
        ("due_date", DataType::Date),
        ("paid_date", DataType::Date),
    ])
}

pub fn behaviors() -> Schema {
    schema(&[
        ("user_id", DataType::String),
        ("ts", ts()),
        ("event", DataType::String),
        ("device_id", DataType::String),
        ("ip_city", DataType::String),
    ])
}

pub fn relations() -> Schema {
    schema(&[
        ("src", DataType::String),
        ("dst", DataType::String),
        ("kind", DataType::String),
        ("since", DataType::Date),
    ])
}

pub fn judgments() -> Schema {
    schema(&[
        ("user_id", DataType::String),
        ("case_id", DataType::String),
        ("filed_date", DataType::Date),
        ("amount", DataType::Float64),
        ("status", DataType::String),
    ])
}

pub fn labels() -> Schema {
    schema(&[
        ("user_id", DataType::String),
        ("defaulted", DataType::Boolean),
    ])
}

pub fn oracle() -> Schema {
    schema(&[
        ("user_id", DataType::String),
        ("true_pd", DataType::Float64),
    ])
}

/// Taiwan users: the generated `user_id` plus the card holder's raw attributes.
pub fn taiwan_users() -> Schema {
    schema(&[
        ("user_id", DataType::String),
        ("id", DataType::Int64),
        ("limit_bal", DataType::Float64),
        ("sex", DataType::Int32),
        ("education", DataType::Int32),
        ("marriage", DataType::Int32),
        ("age", DataType::Int32),
    ])
}

/// Taiwan transactions: the generated transaction columns plus `repayment_status`.
pub fn taiwan_transactions() -> Schema {
    let mut s = transactions();
    s.with_column("repayment_status".into(), DataType::Int32);
    s
}
