//! mail-sync: the MailSyncFunction handler (schedule fan-out and SQS worker).
