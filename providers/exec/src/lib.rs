//! kbg provider that delegates to any external program speaking a JSON protocol
