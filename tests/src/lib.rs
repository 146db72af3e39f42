//! End-to-end test harness: starts real agents, mounts, network namespaces and loop devices. The end-to-end suites arrive with the agent issue.
