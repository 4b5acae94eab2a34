//! The exact schemas the supported testmon versions create, by data version (user_version).

const V13: &str = include_str!("schema_v13.sql");
const V14: &str = include_str!("schema_v14.sql");

/// The `CREATE` statements of testmon's `DB.init_tables` for a data version we support.
pub(crate) fn schema_sql(data_version: i64) -> Option<&'static str> {
    match data_version {
        13 => Some(V13),
        14 => Some(V14),
        _ => None,
    }
}
