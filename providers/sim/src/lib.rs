//! kbg provider whose machines are Node objects in a simulated (kwok-style) cluster
