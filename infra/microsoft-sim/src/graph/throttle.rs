//! Outlook throttling on mailbox routes (owned by S2; this is the skeleton's starting point).
