//! Seeded whole-cluster simulator (filled in below).
