"""Contacts: what agencies know about a child that is not itself a referral but belongs on the
child's chronology (a police domestic-abuse incident, an A&E attendance, a school's attendance
concern, a child-protection plan or looked-after status starting or ending)."""
