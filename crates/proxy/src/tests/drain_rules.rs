//! One test per drain rule of SPEC §2, named after the rule it proves.
