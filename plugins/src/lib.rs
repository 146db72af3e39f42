//! Transfer plugins: the `Transfer` trait and its implementations (gtc TCP peer protocol, multipath, portable storage). Built in the agent and multipath issues.
