//! Records for the unit tests of this crate.

use commons_core::{Body, Charter, Record, SecretKey};

/// A charter signed by `key`, who is its only maintainer.
pub fn charter(key: &SecretKey) -> Record {
    Record::sign(
        key,
        1,
        Body::Charter(Charter {
            name: "c".into(),
            summary: String::new(),
            license: "MIT".into(),
            maintainers: vec![key.public()],
            threshold: 1,
            fork: None,
        }),
    )
    .expect("sign")
}
