//! The pipeline against a real `redis-server` started per test: the numbered scenarios of the
//! pipeline issue, plus the runtime's own guarantees (retention, consumer clean-up, processes).

mod api_input;
mod duplicates;
mod failures;
mod flow;
mod guards;
mod helpers;
mod processes;
mod retention;
mod scale;
mod seams;
