//! Wire formats, below everything that speaks them: PostgreSQL's messages
//! (`pg`) and a framed reader and writer of them (`pg_framed`); MySQL's
//! packets (`my_packet`) and answers (`my_response`). Both the protocol
//! adapters (toward clients) and the backend clients use them.

pub mod my_packet;
pub mod my_response;
pub mod pg;
pub mod pg_framed;
