//! The replica's tests against the paper and against each red team, one test binary: thirty-one
//! binaries each compiled `common` and the replica's generics again at the crate's opt-level and
//! linked alone, about 140 s of CPU in every build from nothing. A file's tests run as
//! `cargo test -p pbft --test protocol -- <file>::`.

mod common;

mod block_time;
mod checkpoints;
mod hostile_input;
mod normal_case;
mod recovery;
mod red_team;
mod red_team_checkpoint;
mod red_team_lives;
mod red_team_lives2;
mod red_team_lives3;
mod red_team_pace;
mod red_team_read_executed;
mod red_team_s14;
mod red_team_s17;
mod red_team_s22;
mod red_team_s27;
mod red_team_s28;
mod red_team_s29;
mod red_team_s30;
mod red_team_s31;
mod red_team_s32;
mod red_team_s35;
mod red_team_s37;
mod red_team_s38;
mod red_team_s39;
mod red_team_s40;
mod red_team_s42;
mod red_team_s45;
mod red_team_s47;
mod red_team_s60;
mod red_team_s62;
mod red_team_s7;
mod view_change;
