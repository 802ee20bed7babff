//! Seeded generation of large realistic mailboxes (owned by S2; this is the skeleton's starting point).
