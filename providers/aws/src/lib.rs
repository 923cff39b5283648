//! kbg provider for AWS EC2 instances, through aws-sdk-ec2
